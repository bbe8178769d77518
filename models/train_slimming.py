"""Network slimming (Liu et al., ICCV 2017) of the M-CifarNet-style net on Fashion-MNIST,
exported with the pruned channels zeroed in place (original shapes kept).

    .venv/bin/python models/train_slimming.py --out-dir models/slim --prune 0.5 [--epochs 1] [--finetune 0.3]
        [--subset 60000] [--l1 1e-2] [--betakept] [--unfolded] [--net slim|fbs]

--net slim (default): a plain Conv3x3-BN-ReLU net with models/fbs.py's shape (same widths and
strides, BN affine, gamma initialised to 0.5 as in the paper's code). Train with an L1 penalty
on every BN scale (SGD lr 0.1, momentum 0.9, cosine decay), prune the --prune fraction of all
channels with the smallest |gamma| (one GLOBAL threshold), fine-tune (SGD lr 0.05, cosine)
with the pruned channels' gamma and beta held at 0, and export OUT_DIR/mcifar_slim_p<100p>.onnx.
The paper's lambda = 1e-4 is for 160 epochs; the shrinkage of |gamma| grows with lambda times
the summed learning rate, so one epoch needs ~1e-2 to drive about half the scales to ~0. Torch folds
BN into the conv in eval mode, so a pruned channel becomes an all-zero filter with zero bias.
  --betakept: also OUT_DIR/mcifar_slim_p<..>_betakept.onnx: the model right after pruning,
              gamma zeroed but beta kept, so a pruned channel is the constant relu(beta).
  --unfolded: also OUT_DIR/mcifar_slim_p<..>_unfolded.onnx with the BatchNormalization nodes
              kept (do_constant_folding=False does not keep them in torch 1.13, so this uses
              TrainingMode.PRESERVE on the eval-mode model, as export_torchvision.py does).

--net fbs: FBS + slimming. models/fbs.py's gated convs have non-affine BN (no gamma), so
filters are ranked instead by their mean |w| (L1 norm / fan-in) divided by the layer's average
(raw |w| scales differ too much between layers: one raw global threshold removed 62 of the
last layer's 64 filters), under one global threshold. A pruned filter is zeroed together with
its BN running_mean, FBS beta and gate row, so the channel is exactly 0. Schedule: d = 1.0 with
the gate L1 penalty, prune, fine-tune at d = 0.75 then 0.5 (train_fbs.py's schedule, Adam),
export OUT_DIR/mcifar_fbs_slim_d50.onnx.

Every file is checked with ONNX Runtime on 1000 test images (accuracy equal to PyTorch's),
and OUT_DIR/pruning.json gets (or updates) one entry per run: per-layer channels, threshold,
accuracies, dense vs pruned MACs, command line. Real data: Debian's dataset-fashion-mnist.
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
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402
import fbs  # noqa: E402
from train_fbs import WIDTH, accuracy  # noqa: E402

STRIDES = [1, 1, 2, 1, 1, 2, 1, 1]  # stem, then the seven convs of fbs.MCifarNetFBS
SIZE = 28


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)  # affine: gamma is the channel's scaling factor
        nn.init.constant_(self.bn.weight, 0.5)  # as in Liu et al.'s code

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class MCifarNetSlim(nn.Module):
    """fbs.MCifarNetFBS without the gates: eight Conv3x3-BN-ReLU blocks, GAP, Linear."""

    def __init__(self, width=WIDTH, num_classes=10):
        super().__init__()
        cins = (1,) + tuple(width[:-1])
        self.blocks = nn.ModuleList(ConvBNReLU(ci, co, s) for ci, co, s in zip(cins, width, STRIDES))
        self.fc = nn.Linear(width[-1], num_classes)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def log(msg):
    print(msg, flush=True)


def train(model, x, y, epochs, lr, penalty=None, after_step=None, sgd=False):
    """Adam, or with sgd=True Liu et al.'s SGD (momentum 0.9, weight decay 1e-4; here with a
    cosine decay to 0): under Adam the L1 term's gradient is rescaled per parameter, so it
    barely shrinks the BN scales."""
    n = int(len(x) * epochs)
    if sgd:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = (n + 127) // 128
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + np.cos(np.pi * t / steps)) if sgd else 1.0)
    model.train()
    perm = torch.cat([torch.randperm(len(x)) for _ in range(int(np.ceil(epochs)))])[:n]
    for i in range(0, n, 128):
        idx = perm[i:i + 128]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if penalty is not None:
            loss = loss + penalty()
        loss.backward()
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        if (i // 128) % 100 == 0:
            log(f"  step {i // 128}/{n // 128} loss {loss.item():.3f}")


# ---- pruning ----

def global_masks(scores, ratio):
    """scores: {layer: 1-D tensor}. Prunes the round(ratio * total) smallest scores over all
    layers (keeping at least one channel per layer); returns ({layer: bool keep}, threshold)."""
    allv = torch.cat([s.flatten() for s in scores.values()]).sort().values
    k = int(round(ratio * len(allv)))
    thr = float((allv[k - 1] + allv[k]) / 2) if 0 < k < len(allv) else float(allv[0]) - 1
    masks = {}
    for name, s in scores.items():
        keep = s > thr
        if not keep.any():
            keep[s.argmax()] = True
        masks[name] = keep
    return masks, thr


def conv_layers(model):
    """[(name, conv, bn, H_out)] in execution order, for either net."""
    if isinstance(model, MCifarNetSlim):
        mods = [(f"blocks.{i}.conv", b.conv, b.bn) for i, b in enumerate(model.blocks)]
    else:
        mods = [("stem.0", model.stem[0], model.stem[1])] + [
            (f"gated.{i}.conv", g.conv, g.bn) for i, g in enumerate(model.gated)]
    out, h = [], SIZE
    for (name, conv, bn), s in zip(mods, STRIDES):
        h = (h + 2 - 3) // s + 1
        out.append((name, conv, bn, h))
    return out


def macs(model, masks, ks=None):
    """Conv MACs C_out * C_in * kh * kw * H_out * W_out (+ the FC), counting only kept channels:
    a pruned output channel also removes that input channel of the next layer. ks: optional
    {layer: k} (FBS top-k); a gated layer then computes at most min(kept, k) channels."""
    total, cin = 0, 1
    for name, conv, _, h in conv_layers(model):
        cout = int(masks[name].sum()) if masks else conv.out_channels
        if ks and name in ks:
            cout = min(cout, ks[name])
        total += cout * cin * 9 * h * h
        cin = cout
    return total + cin * 10


def apply_masks(model, masks, zero_beta=True):
    with torch.no_grad():
        for name, conv, bn, _ in conv_layers(model):
            drop = ~masks[name]
            if bn.affine:
                bn.weight[drop] = 0
                if zero_beta:
                    bn.bias[drop] = 0
            else:  # FBS gated layer: zero the filter and everything else that feeds the channel
                conv.weight[drop] = 0
                bn.running_mean[drop] = 0
                g = dict((f"gated.{i}.conv", m) for i, m in enumerate(model.gated))[name]
                g.gate.weight[drop] = 0
                g.gate.bias[drop] = 0
                if g.beta is not None:
                    g.beta[drop] = 0


# ---- export and checks ----

def export(model, path, x, fold=True):
    model.eval()
    kw = {} if fold else {"training": torch.onnx.TrainingMode.PRESERVE}
    torch.onnx.export(model, x[:1], path, opset_version=13, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **kw)


def check_onnx(model, path, x, y):
    """ORT vs PyTorch accuracy on x, ONNX op types, and how the zeroed channels look."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    m = onnx.load(path)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    zero_ch = []
    for n in m.graph.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        wz = np.all(w.reshape(len(w), -1) == 0, axis=1)
        b = inits[n.input[2]] if len(n.input) > 2 and n.input[2] in inits else None
        bz = f" (bias 0: {int((wz & (b == 0)).sum())}, > 0: {int((wz & (b > 0)).sum())})" if b is not None else " (no bias)"
        zero_ch.append(f"{int(wz.sum())}/{len(w)}" + bz
                       + (f" negzero {int(np.signbit(w[wz]).any(axis=tuple(range(1, w.ndim))).sum())}" if wz.any() else ""))
    bn_zero = []
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            sc, bi = inits[n.input[1]], inits[n.input[2]]
            bn_zero.append(f"{int(((sc == 0) & (bi == 0)).sum())}+{int(((sc == 0) & (bi != 0)).sum())}/{len(sc)}")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"image": x[i:i + 250].numpy()})[0] for i in range(0, len(x), 250)])
    model.eval()
    with torch.no_grad():
        ref = torch.cat([model(x[i:i + 250]) for i in range(0, len(x), 250)]).numpy()
    acc_ort = float((logits.argmax(1) == y.numpy()).mean())
    acc_pt = float((ref.argmax(1) == y.numpy()).mean())
    log(f"{path}: {os.path.getsize(path)} bytes")
    log(f"  ops: {dict(sorted(ops.items()))}")
    log(f"  zero filters per Conv: {zero_ch}")
    if bn_zero:
        log(f"  BN channels with scale 0 (+bias 0 / +bias != 0): {bn_zero}")
    log(f"  accuracy on {len(x)} test images: onnxruntime {acc_ort:.4f}  pytorch {acc_pt:.4f}  "
        f"max |logit diff| {np.abs(logits - ref).max():.2e}" + ("" if acc_ort == acc_pt else "  MISMATCH"))
    return {"ops": dict(sorted(ops.items())), "zero_filters_per_conv": zero_ch, "bn_zero_scale": bn_zero,
            "acc_onnxruntime_1000": acc_ort, "acc_pytorch_1000": acc_pt}


def layer_table(model, masks):
    return {name: {"out_channels": conv.out_channels, "pruned": int((~masks[name]).sum())}
            for name, conv, _, _ in conv_layers(model)}


# ---- the two runs ----

def run_slim(a, xtr, ytr, xte, yte):
    model = MCifarNetSlim()
    bns = [b.bn for b in model.blocks]
    log(f"training {a.epochs} epoch(s) with L1 {a.l1} on the BN scales")
    t0 = time.time()
    train(model, xtr, ytr, a.epochs, 0.1, sgd=True, penalty=lambda: a.l1 * sum(bn.weight.abs().sum() for bn in bns))
    gam = torch.cat([bn.weight.detach().abs() for bn in bns])
    acc0 = accuracy(model, xte, yte)
    log(f"before pruning: test accuracy {acc0:.4f} ({time.time() - t0:.0f} s); |gamma| quantiles "
        f"10/50/90%: {[round(float(q), 4) for q in gam.quantile(torch.tensor([0.1, 0.5, 0.9]))]}, "
        f"< 1e-2: {int((gam < 1e-2).sum())}/{len(gam)}")
    masks, thr = global_masks({n: bn.weight.detach().abs() for (n, _, bn, _) in conv_layers(model)}, a.prune)
    betas = [bn.bias.detach().clone() for bn in bns]
    apply_masks(model, masks)
    acc1 = accuracy(model, xte, yte)
    log(f"after pruning {a.prune:.0%} (global |gamma| threshold {thr:.4g}): test accuracy {acc1:.4f}")
    for n, v in layer_table(model, masks).items():
        log(f"  {n}: {v['pruned']}/{v['out_channels']} pruned")

    tag = f"p{round(a.prune * 100)}"
    files = {}
    if a.betakept:  # the pruned model before fine-tuning, with the original beta back
        bk = MCifarNetSlim()
        bk.load_state_dict(model.state_dict())
        with torch.no_grad():
            for bn, beta in zip([b.bn for b in bk.blocks], betas):
                bn.bias.copy_(beta)
        acc_bk = accuracy(bk, xte, yte)
        log(f"beta kept (no fine-tune): test accuracy {acc_bk:.4f}")
        path = os.path.join(a.out_dir, f"mcifar_slim_{tag}_betakept.onnx")
        export(bk, path, xte)
        files[os.path.basename(path)] = dict(check_onnx(bk, path, xte[:1000], yte[:1000]), test_accuracy=acc_bk)

    t0 = time.time()
    log(f"fine-tuning {a.finetune} epoch(s) with the pruned gamma and beta held at 0")
    train(model, xtr, ytr, a.finetune, 0.05, sgd=True, after_step=lambda: apply_masks(model, masks))
    acc2 = accuracy(model, xte, yte)
    log(f"after fine-tuning: test accuracy {acc2:.4f} ({time.time() - t0:.0f} s)")

    path = os.path.join(a.out_dir, f"mcifar_slim_{tag}.onnx")
    export(model, path, xte)
    files[os.path.basename(path)] = dict(check_onnx(model, path, xte[:1000], yte[:1000]), test_accuracy=acc2)
    if a.unfolded:
        import onnx
        probe = path + ".probe"
        model.eval()
        torch.onnx.export(model, xte[:1], probe, opset_version=13, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=False)
        ops = sorted({n.op_type for n in onnx.load(probe).graph.node})
        os.remove(probe)
        log(f"do_constant_folding=False gives ops {ops}: BatchNormalization "
            f"{'kept' if 'BatchNormalization' in ops else 'NOT kept (folded anyway)'}")
        path = os.path.join(a.out_dir, f"mcifar_slim_{tag}_unfolded.onnx")
        export(model, path, xte, fold=False)
        files[os.path.basename(path)] = dict(check_onnx(model, path, xte[:1000], yte[:1000]), test_accuracy=acc2,
                                             do_constant_folding_false_ops=ops)
    return tag, {
        "net": "MCifarNetSlim (Conv3x3-BN(affine)-ReLU x 8, widths %s, strides %s, GAP, Linear)" % (list(WIDTH), STRIDES),
        "prune_ratio": a.prune, "l1": a.l1, "global_threshold_abs_gamma": thr,
        "layers": layer_table(model, masks),
        "accuracy": {"before_pruning": acc0, "after_pruning": acc1, "after_finetune": acc2},
        "macs": {"dense": macs(model, None), "pruned_channels_removed": macs(model, masks),
                 "note": "conv C_out*C_in*9*H_out*W_out + FC C_in*10"},
        "files": files,
    }


def run_fbs(a, xtr, ytr, xte, yte):
    model = fbs.MCifarNetFBS(density=1.0, width=WIDTH)
    assert not model.gated[0].bn.affine  # gated convs: no BN scale, so rank filters by their L1 norm
    log(f"d = 1.0: training {a.epochs} epoch(s) with gate L1 {a.gate_l1}")
    train(model, xtr, ytr, a.epochs, 2e-3, penalty=lambda: a.gate_l1 * fbs.gate_l1(model))
    acc0 = accuracy(model, xte, yte)
    log(f"d = 1.0 before pruning: test accuracy {acc0:.4f}")
    scores = {n: conv.weight.detach().abs().mean(dim=(1, 2, 3)) for n, conv, _, _ in conv_layers(model)}
    scores = {n: s / s.mean() for n, s in scores.items()}  # raw |w| scales differ per layer (fan-in)
    masks, thr = global_masks(scores, a.prune)
    stem_bn = model.stem[1]  # the stem is dense with an affine BN: zero its filter, gamma and beta
    apply_masks(model, masks)
    with torch.no_grad():
        model.stem[0].weight[~masks["stem.0"]] = 0
    acc1 = accuracy(model, xte, yte)
    log(f"after pruning {a.prune:.0%} of filters (global relative mean|w| threshold {thr:.4g}): test accuracy {acc1:.4f}")
    for n, v in layer_table(model, masks).items():
        log(f"  {n}: {v['pruned']}/{v['out_channels']} pruned")

    def remask():
        apply_masks(model, masks)
        with torch.no_grad():
            model.stem[0].weight[~masks["stem.0"]] = 0

    accs = {}
    for d in (0.75, 0.5):
        fbs.set_density(model, d)
        log(f"fine-tuning at d = {d}: {a.finetune} epoch(s)")
        train(model, xtr, ytr, a.finetune, 1e-3, penalty=lambda: a.gate_l1 * fbs.gate_l1(model), after_step=remask)
        accs[str(d)] = accuracy(model, xte, yte)
        log(f"d = {d}: test accuracy {accs[str(d)]:.4f}")
    assert not stem_bn.weight[~masks["stem.0"]].any()
    path = os.path.join(a.out_dir, "mcifar_fbs_slim_d50.onnx")
    export(model, path, xte)
    files = {os.path.basename(path): dict(check_onnx(model, path, xte[:1000], yte[:1000]), test_accuracy=accs["0.5"])}
    ks = {f"gated.{i}.conv": g.k() for i, g in enumerate(model.gated)}
    return "fbs_d50", {
        "net": "fbs.MCifarNetFBS(width=%s), gated BN non-affine: filters ranked by mean |w| / layer average of mean |w|" % list(WIDTH),
        "prune_ratio": a.prune, "gate_l1": a.gate_l1, "global_threshold_rel_mean_abs_w": thr,
        "layers": layer_table(model, masks),
        "accuracy": {"before_pruning_d100": acc0, "after_pruning_d100": acc1,
                     "after_finetune_d75": accs["0.75"], "after_finetune_d50": accs["0.5"]},
        "macs": {"dense": macs(model, None), "pruned_channels_removed": macs(model, masks),
                 "fbs_d50_dense": macs(model, None, ks), "fbs_d50_pruned_upper_bound": macs(model, masks, ks),
                 "note": "conv C_out*C_in*9*H_out*W_out + FC C_in*10; gate Gemms not counted; with FBS a gated "
                         "layer computes at most min(kept, k = ceil(0.5 C_out)) channels (upper bound)"},
        "files": files,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="models/slim")
    ap.add_argument("--net", choices=["slim", "fbs"], default="slim")
    ap.add_argument("--prune", type=float, default=0.5, help="fraction of all channels pruned (global threshold)")
    ap.add_argument("--epochs", type=float, default=1.0, help="epochs of training with the sparsity penalty")
    ap.add_argument("--finetune", type=float, default=0.3, help="epochs of fine-tuning after pruning (per density with --net fbs)")
    ap.add_argument("--subset", type=int, default=60000, help="training images used")
    ap.add_argument("--l1", type=float, default=1e-2, help="weight of the L1 penalty on the BN scales")
    ap.add_argument("--gate-l1", type=float, default=1e-4, help="--net fbs: weight of the L1 penalty on gate outputs")
    ap.add_argument("--betakept", action="store_true", help="also export the gamma-only-zeroed variant")
    ap.add_argument("--unfolded", action="store_true", help="also export with the BatchNormalization nodes kept")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = fashion_mnist.load("train")
    xte, yte = fashion_mnist.load("test")
    xtr, ytr = torch.from_numpy(xtr[:a.subset]), torch.from_numpy(ytr[:a.subset])
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    os.makedirs(a.out_dir, exist_ok=True)
    t0 = time.time()
    tag, entry = (run_slim if a.net == "slim" else run_fbs)(a, xtr, ytr, xte, yte)
    entry["command"] = " ".join([".venv/bin/python", "models/train_slimming.py"] + [shlex.quote(s) for s in sys.argv[1:]])
    entry["seconds"] = round(time.time() - t0)
    m = entry["macs"]
    log(f"MACs: dense {m['dense']:,}, pruned channels removed {m['pruned_channels_removed']:,} "
        f"({m['pruned_channels_removed'] / m['dense']:.1%})")
    jpath = os.path.join(a.out_dir, "pruning.json")
    data = json.load(open(jpath)) if os.path.exists(jpath) else {}
    data[tag] = entry
    with open(jpath, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    log(f"{jpath}: entry {tag!r} written")


if __name__ == "__main__":
    main()
