#!/usr/bin/env python3
"""Writes the small ONNX files in this folder with PyTorch's dynamo exporter
(`torch.onnx.export(..., dynamo=True)`), which Debian's PyTorch (1.13) does not have. They are
committed; tests/e2e/test_dynamo_exports.py runs them against ONNX Runtime. Re-run by hand after
changing the nets, with torch 2.5 and a matching onnxscript in a separate virtualenv:

    python3 -m venv /tmp/dynamo && /tmp/dynamo/bin/pip install torch==2.5.1 torchvision==0.20.1 \\
        onnxscript==0.1.0 "protobuf<5" onnx==1.17.0
    /tmp/dynamo/bin/python tests/e2e/dynamo/make_fixtures.py

What the dynamo exporter writes differently from the TorchScript one (torch <= 2.4's default):
opset 18, IR 9; BatchNorm, GELU, hardswish, hardtanh and constant padding as calls of local
functions (domain pkg.onnxscript.torch_lib) whose bodies also compute values nobody reads;
scalars cast with CastLike; x[:, :] and [:, :, None] as Slices over the whole extent and
Unsqueezes; MaxPool with its Indices output named. torch 2.5 cannot export scatter, so the FBS
net here writes top-k as "g >= its k-th largest", one of the forms other FBS code uses.

Next to each file, expected.json holds what the PyTorch net has, counted from its modules (not
from Sluice): gated convs, shift layers, and channels whose BN scale and shift were zeroed.
"""
import json
import os
import sys
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, "models"))
import fbs  # noqa: E402
import shift  # noqa: E402


def threshold_select(self, g):
    """Keep the channels whose gate is >= the k-th largest (ties may keep more than k)."""
    values, _ = torch.topk(g, self.k(), dim=1)
    return g * (g >= values[:, -1:]).to(g.dtype)


class Zoo(nn.Module):
    """Ops the dynamo exporter writes as function calls, and a slimmed block: BN (affine) with
    some channels' scale and shift zeroed, hardswish, ReLU6 (hardtanh), GELU, max pool."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24)
        self.c3, self.b3 = nn.Conv2d(24, 24, 1, bias=False), nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.hardswish(self.b1(self.c1(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu6(self.b2(self.c2(x)))
        x = F.gelu(self.b3(self.c3(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def randomize_bn(m, seed):
    g = torch.Generator().manual_seed(seed)
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d):
            b.running_mean.copy_(torch.randn(b.num_features, generator=g) * 0.2)
            b.running_var.copy_(torch.rand(b.num_features, generator=g) + 0.5)
            if b.affine:
                b.weight.data.copy_(torch.rand(b.num_features, generator=g) + 0.5)
                b.bias.data.copy_(torch.randn(b.num_features, generator=g) * 0.2)


def slim(bn, channels):
    bn.weight.data[channels] = 0
    bn.bias.data[channels] = 0
    return len(channels)


def shrink(path):
    """Drops the per-node stack traces and FX dumps the exporter writes (metadata_props,
    doc_string): most of the file, and nothing an inference runtime reads."""
    import onnx

    m = onnx.load(path)
    for nodes in [m.graph.node] + [f.node for f in m.functions]:
        for n in nodes:
            del n.metadata_props[:]
            n.doc_string = ""
    onnx.save(m, path)


def export(m, name, expected, x):
    m.eval()
    path = os.path.join(HERE, name + ".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), path, dynamo=True, input_names=["image"], output_names=["logits"],
                          external_data=False)
    shrink(path)
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))
    expected[name] = dict(expected[name], input_shape=list(x.shape))


def main():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    expected = {}
    fbs.GatedConv2d.select = threshold_select
    width = (8, 8, 16, 16, 16, 24, 24, 24)
    for name, kw in [("fbs_threshold_d50", dict(density=0.5)),
                     ("fbs_threshold_d25_absmean_unmasked", dict(density=0.25, saliency="absmean", beta="unmasked"))]:
        m = fbs.MCifarNetFBS(width=width, **kw)
        randomize_bn(m, 1)
        for gc in m.gated:  # the gate bias and beta as after training, not their initial constants
            gc.gate.bias.data.uniform_(0, 1)
            if gc.beta is not None:
                gc.beta.data.uniform_(-0.5, 0.5)
        expected[name] = {"gates": sum(isinstance(g, fbs.GatedConv2d) for g in m.modules()), "shifts": 0}
        export(m, name, expected, x)
    for form in ("slice", "conv"):
        m = shift.ShiftResNet(width=(8, 16, 24), form=form)
        randomize_bn(m, 2)
        name = "shiftresnet_" + form
        expected[name] = {"gates": 0, "shifts": sum(isinstance(s, shift.Shift) for s in m.modules())}
        export(m, name, expected, x)
    m = Zoo()
    randomize_bn(m, 3)
    dead = slim(m.b1, [1, 4, 5, 11]) + slim(m.b2, [0, 7, 8, 9, 20])
    expected["zoo_slimmed"] = {"gates": 0, "shifts": 0, "zeroed_bn_channels": dead}
    export(m, "zoo_slimmed", expected, x)
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
