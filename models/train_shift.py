"""Trains the ShiftResNet of models/shift.py on Fashion-MNIST and exports it in both shift forms.

    .venv/bin/python models/train_shift.py --out-dir models/shift [--epochs 1] [--subset 60000] [--lr 2e-3]

Training uses the "conv" form (faster in PyTorch; both forms compute the same function), Adam
with a cosine decay of the learning rate to 0, batch 128. Then, in eval mode (BN folded into the
1x1 convs by the exporter), the model is exported twice, input "image" N x 1 x 28 x 28 (dynamic
batch "N"), output "logits", opset 13:
  OUT_DIR/shiftresnet_conv.onnx   shifts as depthwise Conv with one-hot 3x3 kernels;
  OUT_DIR/shiftresnet_slice.onnx  shifts as Slice / Pad / Slice / Concat.
Each file is checked with ONNX Runtime on the full 10k test set (accuracy must equal PyTorch's)
and max |logit diff| vs PyTorch on the first 1000 test images. Writes OUT_DIR/accuracy.json and
OUT_DIR/training_log.txt. Real data: Debian's dataset-fashion-mnist.
"""
import argparse
import collections
import json
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402
import shift  # noqa: E402

LINES = []


def log(msg):
    LINES.append(msg)
    print(msg, flush=True)


def train(model, x, y, epochs, lr, batch):
    n = int(len(x) * epochs)
    steps = (n + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + np.cos(np.pi * t / steps)))
    model.train()
    perm = torch.cat([torch.randperm(len(x)) for _ in range(int(np.ceil(epochs)))])[:n]
    t0, seen, correct = time.time(), 0, 0
    for s, i in enumerate(range(0, n, batch)):
        idx = perm[i:i + batch]
        opt.zero_grad()
        out = model(x[idx])
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        opt.step()
        sched.step()
        seen += len(idx)
        correct += int((out.argmax(1) == y[idx]).sum())
        if s % 50 == 0 or s == steps - 1:
            log(f"  step {s}/{steps} loss {loss.item():.3f} train acc (running) {correct / seen:.3f} "
                f"lr {sched.get_last_lr()[0]:.2e} {time.time() - t0:.0f} s")
            seen = correct = 0


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()


def export(model, path, x):
    model.eval()
    torch.onnx.export(model, x[:1], path, opset_version=13, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})


def check(path, x, y, ref):
    """ORT on all of x: accuracy vs PyTorch's logits ref; max |diff| on the first 1000."""
    import onnx
    import onnxruntime as ort
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"image": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    acc_ort = float((logits.argmax(1) == y).mean())
    acc_pt = float((ref.argmax(1) == y).mean())
    diff = float(np.abs(logits[:1000] - ref[:1000]).max())
    log(f"{path}: {os.path.getsize(path)} bytes, ops {dict(sorted(ops.items()))}")
    log(f"  accuracy on {len(x)} test images: onnxruntime {acc_ort:.4f}  pytorch {acc_pt:.4f}  "
        f"max |logit diff| (1000 images) {diff:.2e}" + ("" if acc_ort == acc_pt else "  MISMATCH"))
    return {"bytes": os.path.getsize(path), "ops": dict(sorted(ops.items())), "acc_onnxruntime": acc_ort,
            "acc_pytorch": acc_pt, "equal": acc_ort == acc_pt, "max_abs_logit_diff_1000": diff}


def shift_layers(model):
    out = []
    for name, m in model.named_modules():
        if isinstance(m, shift.Shift):
            gs = shift.groups(m.channels, m.kernel)
            out.append({"name": name, "channels": m.channels,
                        "channels_shifted": sum(c1 - c0 for c0, c1, o in gs if o != (0, 0)),
                        "channels_unshifted_centre": sum(c1 - c0 for c0, c1, o in gs if o == (0, 0)),
                        "group_sizes": [c1 - c0 for c0, c1, _ in gs]})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="models/shift")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--subset", type=int, default=60000, help="training images used")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine decay to 0)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    command = " ".join([".venv/bin/python", "models/train_shift.py"] + [shlex.quote(s) for s in sys.argv[1:]])
    log(f"command: {command}")
    xtr, ytr = fashion_mnist.load("train")
    xte, yte = fashion_mnist.load("test")
    xtr, ytr = torch.from_numpy(xtr[:a.subset]), torch.from_numpy(ytr[:a.subset])
    xte_t = torch.from_numpy(xte)
    os.makedirs(a.out_dir, exist_ok=True)

    model = shift.ShiftResNet(form="conv")
    layers = shift_layers(model)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"ShiftResNet(width=(16, 32, 64)): {nparams} parameters, {len(layers)} Shift layers, channels "
        f"{[s['channels'] for s in layers]} (shifted {[s['channels_shifted'] for s in layers]})")
    log(f"training {a.epochs} epoch(s) on {len(xtr)} images, Adam lr {a.lr} cosine, batch {a.batch}, "
        f"{a.threads} thread(s)")
    t0 = time.time()
    train(model, xtr, ytr, a.epochs, a.lr, a.batch)
    train_s = time.time() - t0
    log(f"training time {train_s:.0f} s")

    files, accs = {}, {}
    for form in ("conv", "slice"):
        model.set_form(form)
        ref = predict(model, xte_t)
        accs[form] = float((ref.argmax(1) == yte).mean())
        log(f"form {form!r}: pytorch test accuracy {accs[form]:.4f}")
        path = os.path.join(a.out_dir, f"shiftresnet_{form}.onnx")
        export(model, path, xte_t)
        files[os.path.basename(path)] = dict(check(path, xte, yte, ref), form=form)
    model.set_form("conv")
    if accs["conv"] != accs["slice"]:
        log(f"WARNING: pytorch accuracy differs between forms: {accs}")

    result = {
        "net": "models/shift.py ShiftResNet(width=(16, 32, 64)): stem conv3x3, 6 ShiftBlocks "
               "(1x1 conv-BN-ReLU-shift3x3-1x1 conv-BN + residual, expansion 3), GAP, Linear",
        "parameters": nparams,
        "pytorch_test_accuracy": accs["conv"],
        "pytorch_test_accuracy_per_form": accs,
        "test_images": len(yte),
        "files": files,
        "shift_layers": len(layers),
        "shift_layer_channels": layers,
        "training": {"epochs": a.epochs, "images": len(xtr), "optimizer": "Adam, cosine decay to 0",
                     "lr": a.lr, "batch": a.batch, "threads": a.threads, "seed": a.seed,
                     "trained_in_form": "conv", "seconds": round(train_s, 1)},
        "command": command,
    }
    with open(os.path.join(a.out_dir, "accuracy.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    log(f"{os.path.join(a.out_dir, 'accuracy.json')} written")
    with open(os.path.join(a.out_dir, "training_log.txt"), "w") as f:
        f.write("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
