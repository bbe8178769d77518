#!/usr/bin/env python3
"""The committed FBS models (models/fbs/*.onnx, trained on Fashion-MNIST), small FBS ResNets and
one-gate nets whose top-k is written the ways other FBS code writes it, run by Sluice and by
ONNX Runtime on the same file and the same real test images: outputs equal, every gate
recognised, executed MACs equal the count derived from the active channels Sluice reports,
and `--gating off` gives the same outputs with executed == dense.

    .venv/bin/python tests/e2e/test_fbs_models.py --sluice build/sluice --work-dir build/e2e_fbs
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "models"))
import fashion_mnist  # noqa: E402


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError("%s -> exit %d: %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return p.stdout


def gated_convs_in(path):
    """Convs of the ONNX file whose output (or its Relu) is multiplied by something a TopK decides, or
    kept (or zeroed) by a Where whose test a TopK decides."""
    g = onnx.load(path).graph
    producer = {o: n for n in g.node for o in n.output}

    def has_topk(v, seen):
        n = producer.get(v)
        if n is None or v in seen:
            return False
        seen.add(v)
        return n.op_type == "TopK" or any(has_topk(i, seen) for i in n.input)

    count = 0
    for n in g.node:
        if n.op_type != "Conv":
            continue
        outs = [n.output[0]]
        consts = {t.name for t in g.initializer} | {c.output[0] for c in g.node if c.op_type == "Constant"}
        for _ in range(2):  # a BN's scale and shift written as Mul and Add of constants; to NHWC
            outs += [r.output[0] for r in g.node if outs[-1] in r.input and (r.op_type == "Transpose" or (
                     r.op_type in ("Mul", "Add") and any(i in consts for i in r.input)))]
        outs += [r.output[0] for r in g.node if r.op_type == "Cast" and r.input[0] == n.output[0]]  # (to double)
        outs += [r.output[0] for r in g.node if r.op_type == "Relu" and r.input[0] in outs]
        for m in g.node:
            for out in outs:
                if (m.op_type in ("Mul", "Einsum") and out in m.input) or (m.op_type == "Where" and out in m.input[1:]):
                    other = [i for i in m.input if i != out]
                    if other and has_topk(other[0], set()):
                        count += 1
    return count


def check(sluice, path, x, work, extra=()):
    xin = os.path.join(work, "x.npy")
    np.save(xin, x)
    out = os.path.join(work, "out")
    stats_path = os.path.join(work, "stats.json")
    run([sluice, "run", path, "--input", "image=" + xin, "--output-dir", out, "--stats-json", stats_path,
         "--threads", "2"] + list(extra))
    return np.load(os.path.join(out, "logits.npy")), json.load(open(stats_path))


def randomise_and_freeze(m):
    """Seeded random BN statistics, gate biases that keep most g > 0, betas of both signs; eval mode."""
    import torch.nn as nn
    import fbs
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
        if isinstance(mod, fbs.GatedConv2d):
            nn.init.uniform_(mod.gate.bias, 0.5, 1.5)
            if mod.beta is not None:
                nn.init.uniform_(mod.beta, -0.5, 0.5)
    m.eval()


def export_28x28(m, path, opset=13):
    """m exported at opset 13 (or `opset`) for [N, 1, 28, 28] images (N dynamic); returns path."""
    import torch
    torch.onnx.export(m, torch.randn(2, 1, 28, 28), path, opset_version=opset, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return path


def old_opset_models(work):
    """The FBS net of models/ exported at opsets 9 and 10, as older exporters write gates: the
    winners scattered by Scatter (ScatterElements' name before opset 11), TopK's k an attribute
    at 9. Returns [path]."""
    import torch
    import fbs

    out = []
    for opset in (9, 10):
        torch.manual_seed(3)
        m = fbs.MCifarNetFBS(density=0.5)
        randomise_and_freeze(m)
        path = export_28x28(m, os.path.join(work, "mcifar_fbs_opset%d.onnx" % opset), opset)
        assert "Scatter" in {n.op_type for n in onnx.load(path).graph.node}, "opset %d: no Scatter in the export" % opset
        out.append(path)
    return out


def residual_models(work):
    """Small FBS ResNets (random weights, seeded) where gated outputs meet dense shortcuts:
    both convs of each block gated (the second without ReLU, before the add), identity and
    1x1-conv shortcuts, winners/losers forms, masked/none beta. Returns [(path, gates)]."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import fbs

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, d, **kw):
            super().__init__()
            self.c1 = fbs.GatedConv2d(cin, cout, 3, stride, density=d, **kw)
            self.c2 = fbs.GatedConv2d(cout, cout, 3, 1, density=d, act=False, **kw)
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return F.relu(self.c2(self.c1(x)) + (x if self.down is None else self.down(x)))

    class Net(nn.Module):
        def __init__(self, d, **kw):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU())
            self.blocks = nn.Sequential(Block(16, 16, 1, d, **kw), Block(16, 24, 2, d, **kw))
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    torch.set_num_threads(1)
    out = []
    for d, kw in ((0.5, {}), (0.25, {"form": "losers", "beta": "none"}), (1.0, {"saliency": "absmean"})):
        torch.manual_seed(1)
        m = Net(d, **kw)
        randomise_and_freeze(m)
        out.append(export_28x28(m, os.path.join(
            work, "resnet_fbs_d%d_%s.onnx" % (round(100 * d), "_".join(kw.values()) or "default"))))
    return out


def bound_models(work):
    """Nets where inspect's bound at k must allow for what the kernel does beyond k (a review's
    finds): a gate at d = 0.9 (>= 85% of its outputs active: the layer may run its dense conv,
    and then lists every channel to the next gate or plain conv), and a gate with an unmasked
    beta (its suppressed channels act(beta) are non-zero: active for the next layer). Returns
    [(path, plain convs behind a gate)]."""
    import torch
    import torch.nn as nn
    import fbs

    class Two(nn.Module):
        def __init__(self, d1, d2, kw1=None, plain=False):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU())
            self.g1 = fbs.GatedConv2d(16, 20, 3, 1, density=d1, **(kw1 or {}))
            self.g2 = nn.Sequential(nn.Conv2d(20, 24, 3, 1, 1), nn.ReLU()) if plain else fbs.GatedConv2d(
                20, 24, 3, 1, density=d2)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            return self.fc(self.g2(self.g1(self.stem(x))).mean((2, 3)))

    torch.set_num_threads(1)
    out = []
    for name, args in (("bound_d90_d50", (0.9, 0.5)), ("bound_d90_plain", (0.9, 0.5, None, True)),
                       ("bound_unmasked_beta", (0.5, 0.5, {"beta": "unmasked"}))):
        torch.manual_seed(2)
        m = Two(*args)
        randomise_and_freeze(m)
        out.append((export_28x28(m, os.path.join(work, name + ".onnx")), 1 if len(args) > 3 else 0))
    return out


def partly_gated_models(work):
    """FBS nets that gate some convs only (random weights, seeded): a ResNet whose blocks gate
    their first conv and keep the second plain (Conv + BN, then the shortcut), and a VGG-style
    net with a plain conv behind each gate (one through a max pool, one a 1x1 head), also with a
    third of the first plain conv's channels slimmed away (zero BN scale and shift). The plain
    convs must read only the channels the gate kept. Returns [(path, plain convs behind a gate)]."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import fbs

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, d):
            super().__init__()
            self.c1 = fbs.GatedConv2d(cin, cout, 3, stride, density=d)
            self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return F.relu(self.c2(self.c1(x)) + (x if self.down is None else self.down(x)))

    class ResNet(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU())
            self.blocks = nn.Sequential(Block(16, 16, 1, d), Block(16, 32, 2, d))
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    class Vgg(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU())
            self.g1 = fbs.GatedConv2d(16, 32, 3, 1, density=d)
            self.p1 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.g2 = fbs.GatedConv2d(32, 48, 3, 1, density=d, beta="none")
            self.head = nn.Conv2d(48, 10, 1)

        def forward(self, x):
            x = self.head(self.g2(self.p1(self.g1(self.stem(x)))))
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    torch.set_num_threads(1)
    out = []
    for name, cls, d in (("resnet", ResNet, 0.5), ("vgg", Vgg, 0.25), ("vgg_slimmed", Vgg, 0.5)):
        torch.manual_seed(2)
        m = cls(d)
        randomise_and_freeze(m)
        if name == "vgg_slimmed":  # network slimming on the plain convs: zero BN scales and shifts
            for bn in (m.p1[2],):
                with torch.no_grad():
                    bn.weight[::3] = 0
                    bn.bias[::3] = 0
        out.append((export_28x28(m, os.path.join(work, "partly_gated_%s_d%d.onnx" % (name, round(100 * d)))), 2))
    return out


def depthwise_models(work):
    """FBS MobileNetV2-style nets (random weights, seeded): inverted residual blocks whose 1x1
    expand conv is gated and whose 3x3 depthwise conv is gated too (its gate picks channels of
    its input and output alike) or plain behind the expand gate (then it must compute only the
    channels that gate kept), at stride 1 with the shortcut and at stride 2. The two densities
    differ, so a depthwise gate keeps channels whose input the expand gate suppressed (their
    output is the conv's bias). Returns [(path, plain convs behind a gate)]: the 1x1 project
    convs behind a gated depthwise conv, or the plain depthwise convs."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import fbs

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, d_exp, d_dw, beta):
            super().__init__()
            hid = 3 * cin
            self.exp = fbs.GatedConv2d(cin, hid, 1, density=d_exp, beta=beta)
            self.dw = (fbs.GatedConv2d(hid, hid, 3, stride, density=d_dw, beta=beta, groups=hid) if d_dw else
                       nn.Sequential(nn.Conv2d(hid, hid, 3, stride, 1, groups=hid), nn.BatchNorm2d(hid), nn.ReLU6()))
            self.proj = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.proj(self.dw(self.exp(x)))
            return x + y if self.res else y

    class Net(nn.Module):
        def __init__(self, d_exp, d_dw, beta):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.blocks = nn.Sequential(Block(16, 16, 1, d_exp, d_dw, beta), Block(16, 24, 2, d_exp, d_dw, beta),
                                        Block(24, 24, 1, d_exp, d_dw, beta))
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    torch.set_num_threads(1)
    out = []
    for name, d_exp, d_dw, beta in (("dw_gated", 0.5, 0.75, "masked"), ("dw_gated_unmasked", 0.75, 0.5, "unmasked"),
                                    ("dw_plain", 0.5, None, "masked")):
        torch.manual_seed(3)
        m = Net(d_exp, d_dw, beta)
        randomise_and_freeze(m)
        out.append((export_28x28(m, os.path.join(work, "mobilenet_%s.onnx" % name)), 3))
    return out


def depthwise_convs_in(path):
    """Names of the ONNX file's depthwise convs (group = input channels > 1)."""
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(m.graph.value_info) + list(m.graph.input)}
    names = set()
    for n in m.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1 and len(dims.get(n.input[0], [])) == 4 and dims[n.input[0]][1] == group:
            names.add(n.name)
    return names


# Predictor activations other than FBS's relu (and none): "_neg" ones give some winners g < 0.
SALIENCY_FORMS = ("relu6_g", "hardsigmoid_g", "softplus_g", "leaky_relu_g_neg", "elu_g_neg", "linear_g_neg", "tanh_g_neg",
                  "abs_g", "silu_g_neg", "hardswish_g_neg", "gelu_g_neg", "softmax_g")


def other_form_models(work):
    """The same top-k gate written the ways other FBS code writes it (random weights, seeded):
    g times ones scattered at the TopK indices; g compared with its k-th largest value (>=
    or >, the value taken by Slice, Gather or ReduceMin of the TopK values, or from all of g
    sorted) and applied with
    Mul or Where; the predictor as a 1x1 conv on the pooled [N, C, 1, 1]; the mean written as
    a sum over H, W divided by H * W; the mean |x| as an L1 norm over H * W, or as avg_pool2d
    with a kernel the size of the map; the gate after the conv's Relu; g >= t at opset 11
    (Not(Less)); the k-th largest read with torch.gather; the winners as the first k of
    argsort with their g gathered; the winners' ones written with one_hot (summed, or their max); scatter_add into
    zeros; index_put (pi[arange(N)[:, None], i] = v, exported as ScatterND at (n, i) pairs) of
    the values, of ones for a mask, or of zeros at the losers; masked_fill of the losers; the 1x1
    conv predictor flattened before its Relu; the mean over W then over H; g = sigmoid(...); pi
    expanded or repeated to the conv's shape by hand, or viewed as [C, 1, 1] (batch 1), or applied as
    torch.where(pi > 0, conv, torch.zeros(())); the saliency pooled by the maximum or the
    L2 norm instead of the mean; the top-k taken in double and cast back; a hard 0/1 mask with
    no g multiplier (ones scattered, the test cast, torch.where(test, 1.0, 0.0), which torch
    exports in double, one_hot, the losers zeroed in ones); the 1x1-conv
    predictor's [N, C, 1, 1] ranked and scattered as it is; g = softmax over the channels; the test viewed to [N, C, 1, 1] before
    its cast, or the condition of Where(test, conv, 0) or Where(losers, 0, conv); the winners
    scattered into [N, C, 1, 1] zeros at the indices viewed as [N, k, 1, 1]; the k smallest of -g
    with their values negated back; a MatMul predictor plus one scalar bias; ones at the first k of
    argsort times g; the predictor or the
    product written with torch.einsum ('nc,cd->nd', 'nchw,nc->nchw'); g = relu6, hardsigmoid, softplus or abs
    of the predictor, or its leaky relu, elu, tanh or no activation at all with winners below 0.
    Returns the paths;
    each has one gated conv."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    saliency_acts = dict(zip(SALIENCY_FORMS, (F.relu6, F.hardsigmoid, F.softplus, lambda z: F.leaky_relu(z, 0.1),
                                              F.elu, lambda z: z, torch.tanh, torch.abs, F.silu, F.hardswish, F.gelu,
                                              lambda z: F.softmax(z, 1))))

    class Net(nn.Module):
        def __init__(self, form, k=6):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU())
            self.conv = nn.Conv2d(8, 16, 3, padding=1)
            self.gate = (nn.Conv2d(8, 16, 1) if form in ("conv1x1_predictor", "conv1x1_flatten_relu", "conv1x1_topk_nc11")
                         else nn.Linear(8, 16))
            nn.init.uniform_(self.gate.bias, 0.2, 1.0)
            if form.endswith("_neg"):  # g below 0 for some winners too: they are active all the same
                nn.init.uniform_(self.gate.bias, -0.6, 0.2)
            if form == "where_positive":  # most g = relu(...) are 0, winners among them, which Where suppresses
                nn.init.uniform_(self.gate.bias, -1.5, 0.2)
            self.fc = nn.Linear(16, 10)
            self.form, self.k = form, k
            self.bn_scale = nn.Parameter(torch.rand(1, 16, 1, 1) + 0.5)
            self.bn_shift = nn.Parameter(torch.rand(1, 16, 1, 1) - 0.5)

        def forward(self, x):
            x = self.stem(x)
            if self.form == "conv1x1_predictor":  # squeeze-and-excitation style: 1x1 conv on [N, C, 1, 1]
                g = F.relu(self.gate(F.adaptive_avg_pool2d(x, 1))).flatten(1)
            elif self.form == "conv1x1_topk_nc11":  # the same, ranked and scattered as [N, C, 1, 1]
                g4 = F.relu(self.gate(F.adaptive_avg_pool2d(x, 1)))
                v4, i4 = g4.topk(self.k, 1)
                y = F.relu(self.conv(x) * torch.zeros_like(g4).scatter(1, i4, v4))
                return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))
            elif self.form == "sum_over_hw":
                g = F.relu(self.gate(x.sum((2, 3)) / (x.shape[2] * x.shape[3])))
            elif self.form == "l1_norm_over_hw":  # mean |x| as an L1 norm (ReduceL1) over H * W
                g = F.relu(self.gate(torch.norm(x, p=1, dim=(2, 3)) / (x.shape[2] * x.shape[3])))
            elif self.form == "avg_pool_whole_map":  # AveragePool with a kernel the size of the map
                g = F.relu(self.gate(F.avg_pool2d(x.abs(), 28).flatten(1)))  # the 28 x 28 map
            elif self.form == "conv1x1_flatten_relu":  # the 1x1 conv's [N, M, 1, 1] flattened before the Relu
                g = F.relu(self.gate(x.mean((2, 3))[:, :, None, None]).flatten(1))
            elif self.form == "mean_w_then_h":
                g = F.relu(self.gate(x.mean(3).mean(2)))
            elif self.form == "sigmoid_g":
                g = torch.sigmoid(self.gate(x.mean((2, 3))))
            elif self.form in saliency_acts:  # other papers' activations of the predictor, or none
                g = saliency_acts[self.form](self.gate(x.mean((2, 3))))
            elif self.form == "max_saliency":  # other channel-gating papers pool by the maximum
                g = F.relu(self.gate(F.adaptive_max_pool2d(x, 1).flatten(1)))
            elif self.form == "l2_saliency":  # or by the L2 norm
                g = F.relu(self.gate(x.norm(p=2, dim=(2, 3))))
            elif self.form == "l2_frobenius":  # the same without p: Sqrt(ReduceSum(x * x))
                g = F.relu(self.gate(x.norm(dim=(2, 3))))
            elif self.form == "flatten_mean":  # the mean of the flattened map
                g = F.relu(self.gate(x.flatten(2).mean(2)))
            elif self.form == "matmul_scalar_bias":  # x @ W + one bias for every channel
                g = F.relu(x.mean((2, 3)) @ self.gate.weight.t() + 0.25)
            elif self.form == "einsum_predictor":  # the predictor written with torch.einsum
                g = F.relu(torch.einsum("nc,cd->nd", x.mean((2, 3)), self.gate.weight.t()) + self.gate.bias)
            elif self.form == "scaled_mean":  # the mean times a scalar (into the weights)
                g = F.relu(self.gate(x.mean((2, 3)) * 0.5))
            else:
                g = F.relu(self.gate(x.mean((2, 3))))
            k = self.k
            if self.form in ("scatter_ones", "conv1x1_predictor", "sum_over_hw", "l1_norm_over_hw", "avg_pool_whole_map",
                             "relu_then_gate", "conv1x1_flatten_relu", "mean_w_then_h", "sigmoid_g", "expand_as",
                             "repeat", "max_saliency", "l2_saliency", "l2_frobenius", "flatten_mean", "scaled_mean",
                             "einsum_predictor", "einsum_apply", "matmul_scalar_bias") or \
                    self.form in saliency_acts:
                pi = g * torch.zeros_like(g).scatter(1, g.topk(k, 1).indices, 1.0)
            elif self.form == "sub_ge_zero":  # g - t compared with 0
                pi = g * ((g - g.topk(k, 1).values[:, -1:]) >= 0).float()
            elif self.form == "where_ones_mask":  # the 0/1 mask from torch.where
                thr = g.topk(k, 1).values[:, -1:]
                pi = g * torch.where(g >= thr, torch.ones_like(g), torch.zeros_like(g))
            elif self.form == "gather_kth_ge":  # the k-th largest read with torch.gather
                thr = torch.gather(g.topk(k, 1).values, 1, torch.full((g.shape[0], 1), k - 1, dtype=torch.long))
                pi = g * (g >= thr).float()
            elif self.form == "argsort_scatter":  # the first k of argsort, values gathered from g
                i = torch.argsort(g, 1, descending=True)[:, :k]
                pi = torch.zeros_like(g).scatter(1, i, torch.gather(g, 1, i))
            elif self.form == "k_smallest_of_minus_g":  # the k smallest of -g, their values negated back
                v, i = (-g).topk(k, 1, largest=False)
                pi = torch.zeros_like(g).scatter(1, i, -v)
            elif self.form == "argsort_ones_times_g":  # ones at the first k of argsort, times g
                pi = g * torch.zeros_like(g).scatter(1, torch.argsort(g, 1, descending=True)[:, :k], 1.0)
            elif self.form == "scatter_add":  # exports as zeros + ScatterElements
                v, i = g.topk(k, 1)
                pi = torch.zeros_like(g).scatter_add(1, i, v)
            elif self.form in ("index_put_values", "index_put_mask", "index_put_losers"):  # ScatterND at (n, i)
                rows = torch.arange(g.shape[0]).unsqueeze(1)
                if self.form == "index_put_values":
                    v, i = g.topk(k, 1)
                    pi = torch.zeros_like(g)
                    pi[rows, i] = v
                elif self.form == "index_put_mask":
                    mask = torch.zeros_like(g)
                    mask[rows, g.topk(k, 1).indices] = 1.0
                    pi = g * mask
                else:  # the C - k smallest zeroed in a copy of g
                    pi = g.clone()
                    pi[rows, (-g).topk(g.shape[1] - k, 1).indices] = 0.0
            elif self.form == "masked_fill":  # the losers below the k-th largest filled with 0
                pi = g.masked_fill(g < g.topk(k, 1).values[:, -1:], 0.0)
            elif self.form == "one_hot_mask":  # ones at the winners written with one_hot
                pi = g * F.one_hot(g.topk(k, 1).indices, g.shape[1]).sum(1).to(g.dtype)
            elif self.form == "one_hot_max_mask":  # the same, the one-hot rows reduced by their max
                pi = g * F.one_hot(g.topk(k, 1).indices, g.shape[1]).amax(1).to(g.dtype)
            elif self.form in ("slice_ge", "slice_ge_opset11"):  # opset 11 writes >= as Not(Less)
                pi = g * (g >= g.topk(k, 1).values[:, -1:]).float()
            elif self.form == "sort_ge":  # the k-th of all C sorted (exports as TopK(g, C))
                pi = g * (g >= torch.sort(g, 1, descending=True).values[:, k - 1:k]).float()
            elif self.form == "gather_where_le":
                pi = torch.where(g.topk(k, 1).values[:, k - 1].unsqueeze(1) <= g, g, torch.zeros_like(g))
            elif self.form == "double_scatter":  # the top-k taken in double, cast back
                gd = g.double()
                v, i = gd.topk(k, 1)
                pi = torch.zeros_like(gd).scatter(1, i, v).float()
            elif self.form == "double_ge":
                gd = g.double()
                pi = (gd * (gd >= gd.topk(k, 1).values[:, -1:]).double()).float()
            # Hard 0/1 masks, no g multiplier (dynamic channel pruning with a straight-through
            # estimator writes them so): pi = 1 where kept.
            elif self.form == "hard_scatter_ones":
                pi = torch.zeros_like(g).scatter(1, g.topk(k, 1).indices, 1.0)
            elif self.form == "hard_ge_float":
                pi = (g >= g.topk(k, 1).values[:, -1:]).float()
            elif self.form == "hard_where_double":  # torch 1.13 exports the 1.0 and 0.0 as doubles:
                # the product, the Relu and the classifier after it then run in double
                pi = torch.where(g >= g.topk(k, 1).values[:, -1:], 1.0, 0.0)
            elif self.form == "hard_where_narrowed":  # the same mask cast back to float
                pi = torch.where(g >= g.topk(k, 1).values[:, -1:], 1.0, 0.0).float()
            elif self.form == "hard_one_hot":
                pi = F.one_hot(g.topk(k, 1).indices, g.shape[1]).sum(1).float()
            # The indices through int32 and back, as tf2onnx writes them (Cast, Cast).
            elif self.form == "scatter_int32_indices":
                v, i = g.topk(k, 1)
                pi = torch.zeros_like(g).scatter(1, i.int().long(), v)
            elif self.form == "one_hot_int32_indices":
                pi = g * F.one_hot(g.topk(k, 1).indices.int().long(), g.shape[1]).sum(1).to(g.dtype)
            elif self.form == "one_hot_keepdim":  # the sum keeps its axis; a reshape drops it
                pi = g * F.one_hot(g.topk(k, 1).indices, g.shape[1]).sum(1, keepdim=True).reshape(g.shape).to(g.dtype)
            elif self.form == "hard_losers_into_ones":
                pi = torch.ones_like(g).scatter(1, (-g).topk(g.shape[1] - k, 1).indices, 0.0)
            elif self.form == "where_positive":  # the winners scattered: some of them have g = 0
                v, i = g.topk(k, 1)
                pi = torch.zeros_like(g).scatter(1, i, v)
            else:  # min_gt
                pi = g * (g > g.topk(k, 1).values.min(1, keepdim=True).values).float()
            if self.form == "relu_then_gate":  # the gate after the conv's Relu
                y = F.relu(self.conv(x)) * pi[:, :, None, None]
            elif self.form == "channel_last_mask":  # the mask applied to the conv's output in NHWC, as tf2onnx does
                y = F.relu(self.conv(x).permute(0, 2, 3, 1) * pi[:, None, None, :] + self.bn_shift.reshape(1, 1, 1, 16))
                y = y.permute(0, 3, 1, 2)
            elif self.form == "scale_then_gate":  # a BN's scale and shift as Mul and Add between conv and gate
                y = F.relu((self.conv(x) * self.bn_scale + self.bn_shift) * pi[:, :, None, None])
            elif self.form == "where_positive":  # a hard mask of pi's positive entries: 0 for a winner with g = 0
                y = F.relu(torch.where(pi[:, :, None, None] > 0, self.conv(x), torch.zeros(())))
            elif self.form in ("hard_ge_viewed_then_cast", "where_bool_mask", "where_bool_losers"):
                # The test itself viewed to [N, C, 1, 1], then cast by the product's type promotion,
                # or applied as the condition of a Where (the losers' test: Where(test, 0, conv)).
                thr = g.topk(k, 1).values[:, -1:]
                c = self.conv(x)
                if self.form == "hard_ge_viewed_then_cast":
                    y = F.relu(c * (g >= thr)[:, :, None, None])
                elif self.form == "where_bool_mask":
                    y = F.relu(torch.where((g >= thr)[:, :, None, None], c, torch.zeros_like(c)))
                else:
                    y = F.relu(torch.where((g < thr)[:, :, None, None], torch.zeros(()), c))
            elif self.form == "einsum_apply":  # the selection applied with torch.einsum
                y = F.relu(torch.einsum("nchw,nc->nchw", self.conv(x), pi))
            elif self.form == "scatter_into_nc11":  # the winners scattered into [N, C, 1, 1] zeros, indices viewed
                v, i = g.topk(k, 1)
                p4 = torch.zeros(g.shape[0], g.shape[1], 1, 1).scatter(1, i[:, :, None, None], v[:, :, None, None])
                y = F.relu(self.conv(x) * p4)
            elif self.form == "view_c11_batch1":  # pi.view(-1, 1, 1): [C, 1, 1], right for a batch of one only
                y = F.relu(self.conv(x) * pi.view(-1, 1, 1))
            elif self.form in ("expand_as", "repeat"):  # pi broadcast by hand to the conv's shape
                c = self.conv(x)
                p4 = pi[:, :, None, None]
                y = F.relu(c * (p4.expand_as(c) if self.form == "expand_as" else p4.repeat(1, 1, c.shape[2], c.shape[3])))
            else:
                y = F.relu(self.conv(x) * pi[:, :, None, None])
            if self.form == "hard_where_double":  # (ORT has no double GlobalAveragePool; a double ReduceMean)
                return self.fc(y.mean((2, 3)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    out = []
    for form in ("scatter_ones", "slice_ge", "sort_ge", "gather_where_le", "min_gt", "conv1x1_predictor", "sum_over_hw",
                 "l1_norm_over_hw", "avg_pool_whole_map", "relu_then_gate", "slice_ge_opset11", "gather_kth_ge",
                 "argsort_scatter", "one_hot_mask", "one_hot_max_mask", "scatter_add", "index_put_values", "index_put_mask",
                 "index_put_losers", "masked_fill", "conv1x1_flatten_relu", "mean_w_then_h", "sigmoid_g", "expand_as",
                 "repeat", "max_saliency", "l2_saliency", "l2_frobenius", "flatten_mean", "scaled_mean", "where_ones_mask",
                 "sub_ge_zero", "double_scatter", "double_ge", "conv1x1_topk_nc11", "hard_scatter_ones", "hard_ge_float",
                 "hard_where_double", "hard_where_narrowed", "hard_one_hot", "hard_losers_into_ones",
                 "scatter_int32_indices", "one_hot_int32_indices", "one_hot_keepdim", "scale_then_gate", "channel_last_mask",
                 "view_c11_batch1", "where_positive", "hard_ge_viewed_then_cast", "where_bool_mask", "where_bool_losers",
                 "scatter_into_nc11", "einsum_predictor", "einsum_apply", "k_smallest_of_minus_g", "matmul_scalar_bias",
                 "argsort_ones_times_g", *SALIENCY_FORMS):
        torch.manual_seed(2)
        path = os.path.join(work, "form_%s.onnx" % form)
        one = form.endswith("batch1")  # exported for a batch of one, which is all it runs
        torch.onnx.export(Net(form).eval(), torch.randn(1 if one else 2, 1, 28, 28), path,
                          opset_version=11 if "opset11" in form else 13, input_names=["image"], output_names=["logits"],
                          dynamic_axes=None if one else {"image": {0: "N"}, "logits": {0: "N"}})
        out.append(path)
    return out


def silenced_models(work):
    """mcifar_fbs_d50 with every gate of gated.3 at 0 (gate weight 0, bias -1e4), and again
    with gated.3's k = 0: gated.4 then has no active input channel but active outputs, each
    its conv bias everywhere, gated (a fuzzer's wrong answer: they came out 0)."""
    from onnx import numpy_helper
    paths = []
    for kind in ("zero_gate", "k0"):
        m = onnx.load(os.path.join(REPO, "models", "fbs", "mcifar_fbs_d50.onnx"))
        for init in m.graph.initializer:
            if kind == "zero_gate" and init.name in ("gated.3.gate.weight", "gated.3.gate.bias"):
                v = numpy_helper.to_array(init)
                v = np.zeros_like(v) if init.name.endswith("weight") else np.full_like(v, -1e4)
                init.CopyFrom(numpy_helper.from_array(v, init.name))
        if kind == "k0":
            for n in m.graph.node:
                if n.name == "/gated.3/Constant":  # TopK's k
                    t = numpy_helper.to_array(n.attribute[0].t)
                    n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.zeros_like(t), n.attribute[0].t.name))
        path = os.path.join(work, "silenced_%s.onnx" % kind)
        onnx.save(m, path)
        paths.append(path)
    return paths


def lookalike_models(work):
    """Top-k look-alikes that must stay generic ops (exported at a fixed batch of 2): the
    threshold read with torch.gather from one index row, which gives sample 0's k-th largest to
    both samples (a review found it taken as a per-sample gate); sample n's winners put
    (index_put) into row N-1-n; relu(conv) * pi where g (a leaky relu) can be negative; and a
    Where whose boolean test compares g with half its k-th largest (more than k channels stay);
    a top-k over the whole batch's g flattened to [1, N * C] (a review found it taken per sample);
    and the k smallest of -g scattered without negating them back (pi = -g)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self, form, k=6):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU())
            self.conv = nn.Conv2d(8, 16, 3, padding=1)
            self.gate = nn.Linear(8, 16)
            nn.init.uniform_(self.gate.bias, 0.2, 1.0)
            self.form, self.k = form, k

        def forward(self, x):
            x = self.stem(x)
            g = F.relu(self.gate(x.mean((2, 3))))
            if self.form == "relu_then_gate_leaky_g":  # relu(conv) * pi is no relu(conv * pi) where pi < 0
                g = F.leaky_relu(self.gate(x.mean((2, 3))) - 0.5, 0.1)
                pi = g * torch.zeros_like(g).scatter(1, g.topk(self.k, 1).indices, 1.0)
                return F.adaptive_avg_pool2d(F.relu(self.conv(x)) * pi[:, :, None, None], 1).flatten(1)
            if self.form == "where_bool_half_kth":  # Where(g >= kth / 2, conv, 0): more than k channels
                thr = g.topk(self.k, 1).values[:, -1:] * 0.5
                c = self.conv(x)
                return F.adaptive_avg_pool2d(F.relu(torch.where((g >= thr)[:, :, None, None], c, torch.zeros_like(c))),
                                             1).flatten(1)
            if self.form == "topk_over_batch":  # one top-k over the whole batch's g, then viewed per sample
                gf = g.reshape(1, -1)
                mask = (gf >= gf.topk(self.k, 1).values.min(1, keepdim=True).values).reshape(g.shape[0], -1, 1, 1)
                return F.adaptive_avg_pool2d(F.relu(self.conv(x) * mask.float()), 1).flatten(1)
            if self.form == "minus_g_values_kept":  # the k smallest of -g scattered as they are: pi = -g
                v, i = (-g).topk(self.k, 1, largest=False)
                pi = torch.zeros_like(g).scatter(1, i, v)
                return F.adaptive_avg_pool2d(F.relu(self.conv(x) * pi[:, :, None, None]), 1).flatten(1)
            if self.form == "gather_one_row":
                thr = torch.gather(g.topk(self.k, 1).values, 1, torch.full((1, 1), self.k - 1, dtype=torch.long))
                pi = g * (g >= thr).float()
            else:  # index_put_rows_flipped
                v, i = g.topk(self.k, 1)
                pi = torch.zeros_like(g)
                pi[torch.arange(g.shape[0]).flip(0).unsqueeze(1), i] = v
            y = F.relu(self.conv(x) * pi[:, :, None, None])
            return F.adaptive_avg_pool2d(y, 1).flatten(1)

    paths = []
    for form in ("gather_one_row", "index_put_rows_flipped", "relu_then_gate_leaky_g", "where_bool_half_kth",
                 "topk_over_batch", "minus_g_values_kept"):
        torch.manual_seed(3)
        path = os.path.join(work, "lookalike_%s.onnx" % form)
        torch.onnx.export(Net(form).eval(), torch.randn(2, 1, 28, 28), path, opset_version=13, input_names=["image"],
                          output_names=["logits"])
        paths.append(path)
    return paths


def k_from_input(sluice, work):
    """TopK's K fed as a model input: plans are made for its value. `inspect` needs it (--input),
    and says so when it is missing; `run` follows it. Returns the number of failed checks."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from onnx import TensorProto, helper

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.conv = nn.Conv2d(1, 8, 3, 1, 1), nn.Conv2d(8, 16, 3, 1, 1)
            self.fc, self.head = nn.Linear(8, 16), nn.Linear(16, 10)
            nn.init.uniform_(self.fc.bias, 0.2, 1.0)

        def forward(self, x):
            x = F.relu(self.stem(x))
            g = F.relu(self.fc(x.mean((2, 3))))
            v, i = g.topk(5, 1)
            pi = torch.zeros_like(g).scatter(1, i, v)
            return self.head(F.relu(self.conv(x) * pi[:, :, None, None]).mean((2, 3)))

    torch.manual_seed(0)
    path = os.path.join(work, "k_input.onnx")
    torch.onnx.export(Net().eval(), torch.randn(1, 1, 28, 28), path, opset_version=13, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    m = onnx.load(path)
    m.graph.input.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    for n in m.graph.node:
        if n.op_type == "TopK":
            n.input[1] = "k"
    onnx.save(m, path)
    failures = 0
    p = subprocess.run([sluice, "inspect", path, "-s", "image=1x1x28x28"], capture_output=True, text=True)
    ok = p.returncode == 1 and "model input 'k'" in p.stderr and "--input k=" in p.stderr
    failures += not ok
    print("%s k_input.onnx: inspect without k names it and says how to give it: %s" % (
        "PASS" if ok else "FAIL", p.stderr.strip()[-160:]))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.save(os.path.join(work, "k_x.npy"), x)
    # --shape and an --input file that disagree: an error naming both, not one silently taken.
    np.save(os.path.join(work, "k3.npy"), np.array([3], np.int64))
    p = subprocess.run([sluice, "inspect", path, "-s", "image=1x1x28x28", "-i", "image=" + os.path.join(work, "k_x.npy"),
                        "-i", "k=" + os.path.join(work, "k3.npy")], capture_output=True, text=True)
    ok = p.returncode == 2 and "[1, 1, 28, 28]" in p.stderr and "[2, 1, 28, 28]" in p.stderr
    failures += not ok
    print("%s k_input.onnx: inspect with --shape and --input disagreeing: %s" % ("PASS" if ok else "FAIL",
                                                                               p.stderr.strip()[-120:]))
    # -b sets the image's dynamic batch while --input gives K (a file for another input).
    p = subprocess.run([sluice, "inspect", path, "--json", "-b", "2", "-i", "k=" + os.path.join(work, "k3.npy")],
                       capture_output=True, text=True)
    ok = p.returncode == 0 and json.loads(p.stdout)["nodes"][-1]["outputs"][0]["shape"][0] == 2
    failures += not ok
    print("%s k_input.onnx: inspect -b 2 with K given by --input plans batch 2: %s" % ("PASS" if ok else "FAIL",
                                                                                         p.stderr.strip()[-120:]))
    macs = {}
    for k in (3, 6):
        kf = os.path.join(work, "k%d.npy" % k)
        np.save(kf, np.array([k], np.int64))
        insp = json.loads(run([sluice, "inspect", path, "--json", "-s", "image=1x1x28x28", "--input", "k=" + kf]))
        out, st_path = os.path.join(work, "k_out"), os.path.join(work, "k_stats.json")
        run([sluice, "run", path, "-i", "image=" + os.path.join(work, "k_x.npy"), "-i", "k=" + kf, "-o", out,
             "--stats-json", st_path])
        y = np.load(os.path.join(out, "logits.npy"))
        so = ort.SessionOptions()
        so.log_severity_level = 3  # the export's Constant that the TopK no longer reads: ORT warns
        ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(
            None, {"image": x, "k": np.array([k], np.int64)})[0]
        macs[k] = json.load(open(st_path))["executed_macs"]
        err = float(np.abs(y - ref).max())
        ok = insp["gates_recognised"] == 1 and ("k=%d/16" % k) in insp["gates"][0]["form"] and err <= 1e-4
        failures += not ok
        print("%s k_input.onnx, k=%d: gate %s; max abs err vs ORT %.3g" % ("PASS" if ok else "FAIL", k,
                                                                          insp["gates"][0].get("form"), err))
    ok = macs[6] > macs[3]
    failures += not ok
    print("%s k_input.onnx: executed MACs follow k (%d at k=3, %d at k=6)" % ("PASS" if ok else "FAIL", macs[3], macs[6]))
    return failures


def density_note(sluice, work):
    """--density on a model with no recognised gate says it has no effect; on a gated one it does not."""
    failures = 0
    x = os.path.join(REPO, "models", "samples", "test_batch8.npy")
    fbs = os.path.join("fbs", "mcifar_fbs_d50.onnx")
    for model, extra, want in (("fashion_cnn.onnx", [], "no recognised FBS gate"), (fbs, [], None),
                               (fbs, ["--reference"], "no effect with --reference")):
        p = subprocess.run([sluice, "run", os.path.join(REPO, "models", model), "-i", "image=" + x, "-o",
                            os.path.join(work, "note_out"), "--density", "0.5"] + extra, capture_output=True, text=True)
        ok = p.returncode == 0 and (("--density has no effect" in p.stderr) == (want is not None)) and \
            (want is None or want in p.stderr)
        failures += not ok
        print("%s %s --density %s: note %s" % ("PASS" if ok else "FAIL", model, " ".join(extra), want or "not given"))
    # Both options on a model with no gate: one note naming both (only --density's was said).
    p = subprocess.run([sluice, "run", os.path.join(REPO, "models", "fashion_cnn.onnx"), "-i", "image=" + x, "-o",
                        os.path.join(work, "note_out"), "--density", "0.5", "--gating", "off"], capture_output=True, text=True)
    ok = p.returncode == 0 and "--density and --gating off have no effect" in p.stderr
    failures += not ok
    print("%s fashion_cnn.onnx --density --gating off: one note naming both (%s)" % ("PASS" if ok else "FAIL",
                                                                                    p.stderr.strip()[:160]))
    return failures


def nonfinite_input(sluice, work):
    """A NaN in one sample of a batch: without --density the run takes the reference kernels
    (and says so), equal to ORT where ORT is finite; with --density it keeps the gated kernels,
    and the other samples' outputs are those of the all-finite batch."""
    failures = 0
    model = os.path.join(REPO, "models", "fbs", "mcifar_fbs_d50.onnx")
    x = np.load(os.path.join(REPO, "models", "samples", "test_batch8.npy"))[:3].copy()
    bad = x.copy()
    bad[2, 0, 5, 5] = np.nan
    outs = {}
    for tag, data in (("finite", x), ("nan", bad)):
        path = os.path.join(work, "nonfinite_%s.npy" % tag)
        np.save(path, data)
        for extra in ([], ["--density", "0.25"]):
            out = os.path.join(work, "nonfinite_out_%s_%d" % (tag, len(extra)))
            p = subprocess.run([sluice, "run", model, "-i", "image=" + path, "-o", out] + extra, capture_output=True, text=True)
            if p.returncode != 0:
                print("FAIL nonfinite input %s %s: exit %d %s" % (tag, extra, p.returncode, p.stderr.strip()))
                return failures + 1
            outs[(tag, len(extra))] = (np.load(os.path.join(out, "logits.npy")), p.stderr)
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"image": bad})[0]
    y, err = outs[("nan", 0)]
    checks = [("without --density the run says it used the reference kernels", "reference kernels" in err),
              ("without --density, equal to ORT on the finite samples",
               np.abs(y[:2] - ref[:2]).max() <= 1e-4 * max(1.0, float(np.abs(ref[:2]).max()))),
              # (each run times its kernels anew: equal up to the summation order of the one picked)
              ("with --density, samples 0 and 1 as in the all-finite batch",
               np.abs(outs[("nan", 2)][0][:2] - outs[("finite", 2)][0][:2]).max() <=
               1e-4 * max(1.0, float(np.abs(outs[("finite", 2)][0][:2]).max()))),
              ("with --density, no note that the model has no gate", "no recognised FBS gate" not in outs[("nan", 2)][1])]
    for what, ok in checks:
        failures += not ok
        print("%s nonfinite input: %s" % ("PASS" if ok else "FAIL", what))
    return failures


def nonfinite_gate_params(sluice, work):
    """An inf or NaN among a gated conv's own constants (the predictor's weights, the conv's bias,
    beta): a suppressed channel multiplies them by 0, which ORT makes NaN, and a NaN saliency
    decides the winners there. The run must take the reference kernels, say so, and give ORT's
    NaN where ORT has them (it gave finite values, exit 0 and no note)."""
    import onnx
    from onnx import numpy_helper
    failures = 0
    src = os.path.join(REPO, "models", "fbs", "mcifar_fbs_d50.onnx")
    base = onnx.load(src)
    producer = {o: n for n in base.graph.node for o in n.output}
    # The roles by what the graph does with them: the first gate's Gemm weight, the bias of the
    # conv its mask multiplies, and the constant that multiplies the cast mask (beta).
    gemm = next(n for n in base.graph.node if n.op_type == "Gemm")
    mul = next(n for n in base.graph.node if n.op_type == "Mul" and n.input[0] in producer and
               producer[n.input[0]].op_type == "Conv")
    conv = producer[mul.input[0]]
    beta = next(n.input[0] for n in base.graph.node if n.op_type == "Mul" and n.input[0].startswith("onnx::"))
    x = np.load(os.path.join(REPO, "models", "samples", "test_batch8.npy"))[:2].copy()
    xp = os.path.join(work, "nonfinite_gate_x.npy")
    np.save(xp, x)
    # (One predictor weight: a NaN g of one channel; every bias and beta entry, -inf: some
    # channels are suppressed in every sample.)
    for tag, name, one, value in (("predictor weight NaN", gemm.input[1], True, np.nan),
                                  ("gated conv bias -inf", conv.input[2], False, -np.inf),
                                  ("beta -inf", beta, False, -np.inf)):
        m = onnx.load(src)
        init = next(i for i in m.graph.initializer if i.name == name)
        a = numpy_helper.to_array(init).copy()
        if one:
            a.flat[1] = value
        else:
            a[...] = value
        init.CopyFrom(numpy_helper.from_array(a, name))
        path = os.path.join(work, "nonfinite_gate_%s.onnx" % tag.replace(" ", "_"))
        onnx.save(m, path)
        out = os.path.join(work, "nonfinite_gate_out")
        p = subprocess.run([sluice, "run", path, "-i", "image=" + xp, "-o", out], capture_output=True, text=True)
        if p.returncode != 0:
            print("FAIL nonfinite gate %s: exit %d %s" % (tag, p.returncode, p.stderr.strip()))
            failures += 1
            continue
        y = np.load(os.path.join(out, "logits.npy"))
        ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        # NaN wherever ORT has one (a NaN g meets ORT's Relu, which gives 0 or NaN depending on
        # where the value falls in its vector loop; the reference kernels' Relu keeps it), equal
        # where both are finite.
        finite = np.isfinite(ref) & np.isfinite(y)
        ok = (np.isnan(y)[np.isnan(ref)].all() and
              np.abs(y[finite] - ref[finite]).max(initial=0.0) <= 1e-4 * max(1.0, float(np.abs(ref[finite]).max(initial=0.0))) and
              "reference kernels" in p.stderr)
        failures += not ok
        print("%s nonfinite gate %s: ORT NaN %d, Sluice NaN %d of %d%s" % (
            "PASS" if ok else "FAIL", tag, np.isnan(ref).sum(), np.isnan(y).sum(), y.size,
            "" if "reference kernels" in p.stderr else " (no reference-kernel note)"))
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--work-dir", required=True)
    a = ap.parse_args()
    os.makedirs(a.work_dir, exist_ok=True)
    models = sorted(glob.glob(os.path.join(REPO, "models", "fbs", "*.onnx")))
    assert models, "no models in models/fbs"
    models += residual_models(a.work_dir)  # gated outputs meeting dense shortcuts
    models += old_opset_models(a.work_dir)  # opsets 9 and 10: Scatter
    models += other_form_models(a.work_dir)  # the top-k written other ways
    models += silenced_models(a.work_dir)  # a gated layer whose input is all suppressed
    plain_behind_gates = dict(partly_gated_models(a.work_dir))  # plain convs reading gated outputs
    plain_behind_gates.update(depthwise_models(a.work_dir))  # gated and plain depthwise convs
    for path, plain in bound_models(a.work_dir):  # layers that may run dense; suppressed channels that are not 0
        if plain:
            plain_behind_gates[path] = plain
        else:
            models.append(path)
    models += sorted(plain_behind_gates)
    xte, _ = fashion_mnist.load("test")
    failures = bounded = 0
    for path in models:
        name = os.path.basename(path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        expected_gates = gated_convs_in(path)
        depthwise = depthwise_convs_in(path)
        insp = json.loads(run([a.sluice, "inspect", path, "--json", "--shape", "image=1x1x28x28"]))
        try:
            assert expected_gates > 0, "no gates found in the ONNX file"
            if name.startswith("resnet_fbs"):
                assert expected_gates == 4, "the residual test net has 4 gated convs, the file shows %d" % expected_gates
                fused = [p["count"] for p in insp["passes"] if p["pass"] == "fuse_residual_add"]
                assert fused == [2], "both residual adds fused into their gated conv: %s" % fused
            assert insp["gates_recognised"] == expected_gates, "%d of %d gates recognised: %s" % (
                insp["gates_recognised"], expected_gates, [gt["reason"] for gt in insp["gates"] if not gt["recognised"]])
            readers = [n for n in insp["nodes"] if n["kernel"].startswith("gated-input")]
            assert len(readers) == plain_behind_gates.get(path, 0), "plain convs reading a gate's channels: %s" % [
                n["name"] for n in readers]
            gated = {gt["node"] for gt in insp["gates"] if gt["recognised"]}
            assert all(n.get("reads_gate") in gated for n in readers), "inspect names the gate each reader reads: %s" % [
                (n["name"], n.get("reads_gate")) for n in readers]
            batches = ((1, 0),) if name.endswith("batch1.onnx") else ((1, 0), (16, 100))
            for batch, start in batches:
                x = xte[start:start + batch]
                ref = sess.run(None, {"image": x})[0]
                y, st = check(a.sluice, path, x, a.work_dir)
                err = float(np.abs(y - ref).max())
                scale = max(1.0, float(np.abs(ref).max()))
                assert err <= 1e-4 * scale, "batch %d: max abs err %.3g (scale %.3g)" % (batch, err, scale)
                # executed MACs: dense layers in full, gated layers from their active channels,
                # within inspect's bound at k (inspect ran at batch 1)
                bounds = {n["name"]: n for n in insp["nodes"] if "macs_at_k" in n}
                for b in range(batch):
                    total = 0
                    for layer in st["layers"]:
                        if "active_out_channels" in layer and layer["name"] in depthwise:
                            # output channel o reads input channel o alone: computed where both are active
                            s = layer["samples"][b]
                            per_channel = layer["dense_macs"] // batch // layer["dense_out_channels"]
                            assert s["executed_macs"] % per_channel == 0 and s["executed_macs"] // per_channel <= min(
                                s["active_in_channels"], s["active_out_channels"]), "%s (depthwise): %s" % (
                                    layer["name"], s)
                            assert layer["name"] not in bounds or s["executed_macs"] <= bounds[layer["name"]]["macs_at_k"]
                            total += s["executed_macs"]
                        elif "active_out_channels" in layer:
                            s = layer["samples"][b]
                            # dense MACs count the model's channels (static pruning may run fewer)
                            per_pair = layer["dense_macs"] // batch // (
                                layer["dense_in_channels"] * layer["dense_out_channels"])
                            assert per_pair * batch * layer["dense_in_channels"] * layer["dense_out_channels"] == \
                                layer["dense_macs"], "%s: dense MACs not a multiple of the channel pairs" % layer["name"]
                            assert s["executed_macs"] == s["active_in_channels"] * s["active_out_channels"] * per_pair
                            if layer["name"] in bounds:
                                bd = bounds[layer["name"]]
                                assert s["active_out_channels"] <= bd["active_out_at_most"] and \
                                    s["active_in_channels"] <= bd["active_in_at_most"] and \
                                    s["executed_macs"] <= bd["macs_at_k"], "%s: %s beyond inspect's bound at k %s" % (
                                        layer["name"], s, {k: bd[k] for k in ("active_out_at_most", "active_in_at_most",
                                                                             "macs_at_k")})
                            total += s["executed_macs"]
                        else:
                            total += layer["executed_macs"] // batch
                    assert st["samples"][b]["executed_macs"] == total, "sample %d: %d != %d" % (
                        b, st["samples"][b]["executed_macs"], total)
                assert st["dense_macs"] - st["executed_macs"] == st["skipped_macs"]
                y_off, st_off = check(a.sluice, path, x, a.work_dir, ["--gating", "off"])
                assert float(np.abs(y_off - ref).max()) <= 1e-4 * scale, "--gating off differs from ORT"
                # gating off: every MAC but those of statically removed channels (static_macs)
                assert st_off["dense_macs"] == st["dense_macs"] == batch * insp["dense_macs"]
                assert st_off["executed_macs"] == batch * insp["static_macs"], "--gating off: %d executed, %d static" % (
                    st_off["executed_macs"], batch * insp["static_macs"])
            bounded += len(bounds)
            print("PASS %s: %d gates, outputs match ORT (batch %s), MACs consistent and within inspect's bound at "
                  "k for %d layers; %.1f%% skipped" % (
                      name, expected_gates, ", ".join(str(b) for b, _ in batches), len(bounds),
                      100.0 * st["skipped_macs"] / st["dense_macs"]))
        except AssertionError as e:
            failures += 1
            print("FAIL %s: %s" % (name, e))
    for path in lookalike_models(a.work_dir):
        name = os.path.basename(path)
        insp = json.loads(run([a.sluice, "inspect", path, "--json"]))
        x = xte[:2]
        ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        y, _ = check(a.sluice, path, x, a.work_dir)
        err, scale = float(np.abs(y - ref).max()), max(1.0, float(np.abs(ref).max()))
        ok = insp["gates_recognised"] == 0 and err <= 1e-4 * scale
        failures += not ok
        print("%s %s: %d gates taken (0 wanted), max abs err vs ORT %.3g" % ("PASS" if ok else "FAIL", name,
                                                                           insp["gates_recognised"], err))
        models.append(path)
    ok = bounded > 20
    failures += not ok
    print("%s inspect gives a bound at k for %d gated layers over the models" % ("PASS" if ok else "FAIL", bounded))
    failures += k_from_input(a.sluice, a.work_dir)
    failures += density_note(a.sluice, a.work_dir)
    failures += nonfinite_input(a.sluice, a.work_dir)
    failures += nonfinite_gate_params(a.sluice, a.work_dir)
    print("%d models, %d failed" % (len(models), failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
