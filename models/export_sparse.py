"""Exports magnitude-pruned (unstructured) torchvision CNNs to ONNX: the conv weights pruned
together by torch.nn.utils.prune.global_unstructured with L1Unstructured (the smallest |w|
over all convs go to zero), each linear layer by l1_unstructured at the same amount; random
seeded weights, BatchNorm statistics measured on random images (so deep nets stay alive), BN
folded by the exporter (zeros stay zeros).

    .venv/bin/python models/export_sparse.py --models resnet18,mobilenet_v2,vgg16 \
        --sparsity 0.5,0.7,0.8,0.9,0.95 --out-dir build/bench/sparse [--size 224] [--opset 13] \
        [--scope global|layer]

Writes OUT_DIR/<model>_s<100s>.onnx (input "image" Nx3xSIZExSIZE, output "logits") and prints
one path per line. Depthwise convs (MobileNetV2) are pruned with the rest but run dense.

--scope layer prunes every conv on its own (l1_unstructured at the same amount: uniform
sparsity per layer, as in TVM's and XNNPACK's sparse-inference benchmarks) and writes
<model>_u<100s>.onnx. Global pruning instead spreads the zeros by weight magnitude: on
torchvision's random initialisation (std ~ 1/sqrt(fan-in)) ResNet-18's early layers keep half
their weights at 90% overall, so that its MACs fall only 2.5x.
"""
import argparse
import os


def build(name, sparsity, size, scope="global"):
    # (torch here, not at the top: bench/compare_sparse.py imports this file's argument types)
    import torch
    import torch.nn as nn
    import torch.nn.utils.prune as prune
    import torchvision

    torch.manual_seed(0)
    m = getattr(torchvision.models, name)()
    if sparsity > 0:
        convs = [(mod, "weight") for mod in m.modules() if isinstance(mod, nn.Conv2d)]
        if scope == "layer":
            for mod, n in convs:
                prune.l1_unstructured(mod, n, amount=sparsity)
        else:
            prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=sparsity)
        # The classifier on its own: torchvision initialises it far smaller than the convs
        # (MobileNetV2: N(0, 0.01)), so a global threshold would zero it and kill the net.
        fcs = [(mod, "weight") for mod in m.modules() if isinstance(mod, nn.Linear)]
        for mod, n in fcs:
            prune.l1_unstructured(mod, n, amount=sparsity)
        for mod, n in convs + fcs:
            prune.remove(mod, n)
    # BN statistics measured on random images (cumulative average over a few batches), so
    # that the signal neither dies nor explodes through the depth of the random network.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.1, 0.1)
    m.train()
    with torch.no_grad():
        for _ in range(4):
            m(torch.randn(8, 3, size, size))
    return m.eval()


def model_file(name, scope, sparsity, size, opset):
    """The cached file's name: resnet18_s90.onnx (global threshold) or resnet18_u90.onnx (every
    layer), s99p4 for 0.994 (0.99 and 0.994 once shared s99), and the size and opset where they
    are not the defaults."""
    pct = 100 * sparsity
    tag = "%d" % round(pct) if abs(pct - round(pct)) < 1e-9 else ("%g" % pct).replace(".", "p")
    extra = ("_%dpx" % size if size != 224 else "") + ("_op%d" % opset if opset != 13 else "")
    return "%s_%s%s%s.onnx" % (name, "u" if scope == "layer" else "s", tag, extra)


def fraction(text):
    """argparse type of one sparsity: a fraction of zero weights in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number (fractions of zero weights, e.g. 0.5,0.9)" % text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError("%s is not a fraction in [0, 1]%s" % (
            text, " (for %s%% write %g)" % (text, v / 100) if 1 < v <= 100 else ""))
    return v


def sparsity_list(text):
    """argparse type of --sparsity: comma-separated fractions of zero weights in [0, 1]."""
    return [fraction(v) for v in text.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,vgg16")
    ap.add_argument("--sparsity", type=sparsity_list, default="0.5,0.7,0.8,0.9,0.95",
                    help="fractions of zero weights (default: %(default)s)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--scope", choices=["global", "layer"], default="global",
                    help="global: one magnitude threshold over all convs; layer: each conv at the same sparsity")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    os.makedirs(a.out_dir, exist_ok=True)
    for name in a.models.split(","):
        for s in a.sparsity:
            path = os.path.join(a.out_dir, model_file(name, a.scope, s, a.size, a.opset))
            if not os.path.exists(path):
                m = build(name, s, a.size, a.scope)
                torch.onnx.export(m, torch.randn(1, 3, a.size, a.size), path, opset_version=a.opset,
                                  input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
            print(path, flush=True)


if __name__ == "__main__":
    main()
