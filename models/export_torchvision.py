#!/usr/bin/env python3
"""Export torchvision 0.14 classification models to ONNX with random weights.

No pretrained weights are downloaded: every model is built with random (seeded) weights, and
every BatchNorm layer gets seeded random, non-trivial statistics and affine parameters, so a
runtime that folds BatchNorm wrongly (wrong eps, mean/var swapped, scale forgotten, ...)
produces visibly wrong outputs.

How the BatchNorm values are chosen: in one eval-mode forward pass on random inputs, each BN
(in execution order) measures the mean and variance of its actual input, and its running_mean
and running_var are set to those perturbed by seeded random factors (running_var stays
positive), its weight and bias to seeded random values. Activations thus stay O(1) through deep
networks, which keeps the models numerically well-conditioned for float32 comparisons. The
model is then exported in eval mode.

By default the BatchNormalization nodes are kept in the ONNX graph (torch exports with
TrainingMode.PRESERVE on an eval-mode model), so the runtime's own BN folding is exercised.
With --fold-bn, torch's exporter folds Conv+BN itself (its default EVAL behaviour).

Usage:
  models/export_torchvision.py --models resnet18,mobilenet_v2 --size 224 --opset 13 \
      --out-dir build/models [--dynamic-batch] [--seed 0] [--fold-bn]
  models/export_torchvision.py --list

Output file: OUT_DIR/<model>[_slimfc]_<size>_op<opset>[_dyn|_b<N>][_bnfold].onnx (see model_filename()),
graph input "input" (N x 3 x size x size, float32), graph output "output" (N x 1000 logits).
One line per exported model is printed on stdout.
"""
import argparse
import os
import sys
import time
import warnings

import torch
import torchvision

# name -> (constructor, extra keyword arguments, minimum input size, note)
# Minimum sizes: the smallest spatial size the model accepts and that still exports with
# standard ops (adaptive pooling is exported only when the output size divides the input size).
MODELS = {
    "resnet18": (torchvision.models.resnet18, {}, 32, ""),
    "resnet50": (torchvision.models.resnet50, {}, 32, ""),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, {}, 32, ""),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, {}, 32, "HardSwish/HardSigmoid, SE blocks"),
    "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large, {}, 32, "HardSwish/HardSigmoid, SE blocks"),
    "squeezenet1_0": (torchvision.models.squeezenet1_0, {}, 32, "no BatchNorm; ceil_mode max pools"),
    "squeezenet1_1": (torchvision.models.squeezenet1_1, {}, 32, "no BatchNorm; ceil_mode max pools"),
    "shufflenet_v2_x0_5": (torchvision.models.shufflenet_v2_x0_5, {}, 32, "channel shuffle (Reshape/Transpose), Split"),
    "shufflenet_v2_x1_0": (torchvision.models.shufflenet_v2_x1_0, {}, 32, "channel shuffle (Reshape/Transpose), Split"),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, {}, 32, "SiLU, SE blocks"),
    "googlenet": (torchvision.models.googlenet,
                  {"aux_logits": False, "init_weights": True, "transform_input": False}, 32,
                  "inception blocks, ceil_mode max pools"),
    "inception_v3": (torchvision.models.inception_v3,
                     {"aux_logits": False, "init_weights": True, "transform_input": False}, 75,
                     "avg_pool2d(padding=1, count_include_pad=True) as Pad + AveragePool; asymmetric 1x7/7x1 convs"),
    "densenet121": (torchvision.models.densenet121, {}, 32, "dense concatenations, pre-activation BN"),
    "regnet_x_400mf": (torchvision.models.regnet_x_400mf, {}, 32, "grouped convolutions"),
    "convnext_tiny": (torchvision.models.convnext_tiny, {}, 32,
                      "channel-last LayerNorm (LayerNormalization from opset 17, else Pow/Sqrt/Div), GELU (Erf), "
                      "Linear as MatMul, 7x7 depthwise"),
    "alexnet": (torchvision.models.alexnet, {}, 224, "adaptive pool needs 6x6-divisible features"),
    "vgg11": (torchvision.models.vgg11, {}, 224, "adaptive pool needs 7x7-divisible features; ~500 MB"),
    "vgg11_bn": (torchvision.models.vgg11_bn, {}, 224, "adaptive pool needs 7x7-divisible features; ~500 MB"),
    "vgg16": (torchvision.models.vgg16, {}, 224, "adaptive pool needs 7x7-divisible features; ~530 MB"),
}

DEFAULT_MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_0",
                  "shufflenet_v2_x0_5", "efficientnet_b0", "googlenet", "densenet121",
                  "regnet_x_400mf", "vgg16"]

STANDARD_DOMAINS = ("", "ai.onnx")


def model_filename(name, size, opset, dynamic_batch=False, fold_bn=False, batch=1, slim_classifier=False):
    parts = [name]
    if slim_classifier:
        parts.append("slimfc")
    parts += [str(size), "op%d" % opset]
    if dynamic_batch:
        parts.append("dyn")
    elif batch != 1:
        parts.append("b%d" % batch)
    if fold_bn:
        parts.append("bnfold")
    return "_".join(parts) + ".onnx"


def _randomize_batchnorm(model, gen, size):
    """Give every BN seeded random statistics and affine parameters that keep activations O(1).

    One eval-mode forward pass on random inputs: a pre-hook on each BN (they fire in execution
    order) measures the per-channel mean and variance of the BN's actual input (upstream BNs
    already randomized), then sets running_mean / running_var to those values perturbed by
    seeded random factors, and weight / bias to seeded random values. Because each BN sees the
    real distribution of its input, the perturbations do not compound through deep networks
    (which would make the model numerically ill-conditioned and float32 comparisons meaningless).
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0

    def pre_hook(bn, inputs):
        x = inputs[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=True)
        # floor the variance so nearly constant channels are not blown up on other inputs
        var = var.clamp_min(max(1e-2 * float(var.median()), 1e-4))
        c = bn.num_features
        std = var.sqrt()
        with torch.no_grad():
            # mean off by up to +-0.3 sigma, variance scaled by 0.5..2 (always positive)
            bn.running_mean.copy_(mean + (torch.rand(c, generator=gen, dtype=torch.float64) - 0.5) * 0.6 * std)
            bn.running_var.copy_(var * torch.exp((torch.rand(c, generator=gen, dtype=torch.float64) - 0.5) * 2 * 0.69))
            bn.weight.copy_(0.5 + torch.rand(c, generator=gen))           # 0.5 .. 1.5
            bn.bias.copy_((torch.rand(c, generator=gen) - 0.5) * 0.4)     # -0.2 .. 0.2

    model.eval()
    handles = [bn.register_forward_pre_hook(pre_hook) for bn in bns]
    try:
        with torch.no_grad():
            model(torch.randn(4, 3, size, size, generator=gen))
    finally:
        for h in handles:
            h.remove()
    return len(bns)


def build_model(name, size, seed=0, slim_classifier=False):
    """A torchvision model with seeded random weights and randomized BN, in eval mode."""
    if name not in MODELS:
        raise SystemExit("unknown model %r (see --list)" % name)
    ctor, kwargs, min_size, _ = MODELS[name]
    if size < min_size:
        raise SystemExit("%s needs --size >= %d (got %d)" % (name, min_size, size))
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ctor(weights=None, **kwargs)
    if slim_classifier and name.startswith(("vgg", "alexnet")):
        # Same conv stack and pooling, much narrower fully connected layers (the stock ones are
        # ~120M parameters): keeps files small for tests while the graph structure is unchanged.
        fc = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
        hidden = 256
        model.classifier[list(model.classifier).index(fc[0])] = torch.nn.Linear(fc[0].in_features, hidden)
        model.classifier[list(model.classifier).index(fc[1])] = torch.nn.Linear(hidden, hidden)
        model.classifier[list(model.classifier).index(fc[2])] = torch.nn.Linear(hidden, fc[2].out_features)
    gen = torch.Generator().manual_seed(seed + 1)
    _randomize_batchnorm(model, gen, size)
    model.eval()
    return model


def check_standard_ops(path):
    """Raise if the ONNX file uses anything but the default ONNX domain."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(m)
    bad = sorted({(n.domain, n.op_type) for n in m.graph.node if n.domain not in STANDARD_DOMAINS})
    bad_imports = [o.domain for o in m.opset_import if o.domain not in STANDARD_DOMAINS]
    if bad or bad_imports:
        raise RuntimeError("%s uses non-standard ops/domains: %s %s" % (path, bad, bad_imports))
    return m


def export(name, size, opset, out_dir, dynamic_batch=False, seed=0, fold_bn=False, batch=1,
           slim_classifier=False, path=None, verbose=True):
    """Export one model; returns (path, info dict)."""
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    if path is None:
        path = os.path.join(out_dir, model_filename(name, size, opset, dynamic_batch, fold_bn, batch,
                                                    slim_classifier))
    model = build_model(name, size, seed, slim_classifier)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 2))
    dynamic_axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    training = torch.onnx.TrainingMode.EVAL if fold_bn else torch.onnx.TrainingMode.PRESERVE
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, tmp, opset_version=opset, do_constant_folding=True,
                          input_names=["input"], output_names=["output"], dynamic_axes=dynamic_axes,
                          training=training, export_params=True)
    m = check_standard_ops(tmp)
    os.replace(tmp, path)
    ops = sorted({n.op_type for n in m.graph.node})
    info = {"name": name, "path": path, "size": size, "opset": opset, "nodes": len(m.graph.node),
            "ops": ops, "seconds": time.time() - t0, "bytes": os.path.getsize(path)}
    if verbose:
        print("exported %-20s opset %2d  %dx%d%s  %4d nodes  %7.1f MB  %5.1fs  -> %s" % (
            name, opset, size, size, " dynamic-batch" if dynamic_batch else " batch %d" % batch,
            info["nodes"], info["bytes"] / 1e6, info["seconds"], path), flush=True)
    return path, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated model names (default: %(default)s)")
    ap.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--opset", type=int, default=13, help="ONNX opset, 11..17 (default 13)")
    ap.add_argument("--out-dir", default="build/models", help="output directory (default build/models)")
    ap.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    ap.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fold-bn", action="store_true",
                    help="let torch fold Conv+BatchNorm at export (default: keep BatchNormalization nodes)")
    ap.add_argument("--slim-classifier", action="store_true",
                    help="vgg/alexnet only: 256-wide hidden FC layers instead of 4096")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--list", action="store_true", help="list the known models and exit")
    args = ap.parse_args(argv)

    if args.list:
        for name, (_, _, min_size, note) in MODELS.items():
            print("%-20s min size %3d%s%s" % (name, min_size, "  (default)" if name in DEFAULT_MODELS else "",
                                              "  " + note if note else ""))
        return 0
    if not 7 <= args.opset <= 17:
        ap.error("--opset must be in 7..17 for torch %s" % torch.__version__)
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in MODELS:
            ap.error("unknown model %r (see --list)" % n)
    for n in names:
        export(n, args.size, args.opset, args.out_dir, args.dynamic_batch, args.seed, args.fold_bn,
               args.batch, args.slim_classifier)
    return 0


if __name__ == "__main__":
    sys.exit(main())
