"""Trains the M-CifarNet-style FBS net (models/fbs.py) on Fashion-MNIST with the paper's
schedule and exports one ONNX file per density.

    .venv/bin/python models/train_fbs.py --out-dir models/fbs [--epochs 1] [--finetune 0.3] [--subset 30000]

Schedule (Gao et al. 2019): train at d = 1.0 with the L1 penalty on the gate outputs, then
lower d step by step (0.75, 0.5, 0.35, 0.25), fine-tuning from the previous density's
weights each time. Real data: Debian's dataset-fashion-mnist. Prints test accuracy per
density (PyTorch) and writes OUT_DIR/mcifar_fbs_d<100d>.onnx (input "image" N x 1 x 28 x 28,
dynamic batch; output "logits") and OUT_DIR/pytorch_accuracy.json.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402
import fbs  # noqa: E402

DENSITIES = [1.0, 0.75, 0.5, 0.35, 0.25]
WIDTH = (16, 32, 32, 48, 48, 48, 64, 64)


def train(model, x, y, steps_fraction, lr, l1, log):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = int(len(x) * steps_fraction)
    perm = torch.randperm(len(x))[:n]
    for i in range(0, n, 128):
        idx = perm[i:i + 128]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx]) + l1 * fbs.gate_l1(model)
        loss.backward()
        opt.step()
        if (i // 128) % 50 == 0:
            log(f"  step {i // 128}/{n // 128} loss {loss.item():.3f}")


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="models/fbs")
    ap.add_argument("--epochs", type=float, default=1.0, help="epochs at d = 1.0")
    ap.add_argument("--finetune", type=float, default=0.3, help="epochs of fine-tuning per lower density")
    ap.add_argument("--subset", type=int, default=60000, help="training images used")
    ap.add_argument("--l1", type=float, default=1e-4, help="weight of the L1 penalty on gate outputs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    xtr, ytr = fashion_mnist.load("train")
    xte, yte = fashion_mnist.load("test")
    xtr, ytr = torch.from_numpy(xtr[:a.subset]), torch.from_numpy(ytr[:a.subset])
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    model = fbs.MCifarNetFBS(density=1.0, width=WIDTH)
    os.makedirs(a.out_dir, exist_ok=True)
    results = {}
    for d in DENSITIES:
        fbs.set_density(model, d)
        t0 = time.time()
        log(f"density {d}: training")
        train(model, xtr, ytr, a.epochs if d == 1.0 else a.finetune, 2e-3 if d == 1.0 else 1e-3, a.l1, log)
        acc = accuracy(model, xte, yte)
        results[str(d)] = acc
        path = os.path.join(a.out_dir, f"mcifar_fbs_d{round(d * 100)}.onnx")
        torch.onnx.export(model, xte[:1], path, opset_version=13, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        print(f"density {d}: test accuracy {acc:.4f} ({time.time() - t0:.0f} s) -> {path}", flush=True)
    with open(os.path.join(a.out_dir, "pytorch_accuracy.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
