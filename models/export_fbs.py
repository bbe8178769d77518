"""Exports FBS-augmented VGG-16 and ResNet-18 at 224x224 (random, seeded weights; non-trivial
BN statistics; positive gate biases so that exactly ceil(d * C) channels win) to ONNX.

    .venv/bin/python models/export_fbs.py --models vgg16_fbs,resnet18_fbs --densities 1.0,0.75,0.5,0.25 \
        --out-dir build/bench/fbs [--opset 13]

vgg16_fbs: VGG-16's 13 convs, all but the first gated (models/fbs.py GatedConv2d), its max
pools, then global average pool + Linear(512, 1000). resnet18_fbs: torchvision's ResNet-18
layout with both convs of every basic block gated (the second without ReLU: its gated
output meets the dense shortcut in the residual add, then ReLU); the stem conv and the 1x1
downsampling shortcuts stay dense, as in the FBS paper's ResNet-18. resnet18_fbs_inner: the
same with only the first conv of every block gated and the second plain (Conv + BN), as
channel-gating work that gates inside residual blocks only does: the plain conv reads the
gated channels (Sluice runs it on the active ones only).
mobilenetv2_fbs: torchvision's MobileNetV2 layout with every block's 1x1 expand conv and 3x3
depthwise conv gated (the project conv, stem and head stay plain); mobilenetv2_fbs_expand: only
the expand convs gated, the depthwise convs plain behind them. Writes
OUT_DIR/<model>_d<100d>.onnx and prints one path per line. Input "image" 1x3x224x224.
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fbs  # noqa: E402

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def gated(cin, cout, stride, d, act=True, kernel=3, groups=1):
    g = fbs.GatedConv2d(cin, cout, kernel, stride, density=d, act=act, groups=groups)
    nn.init.uniform_(g.gate.bias, 0.5, 1.5)
    return g


class VGG16FBS(nn.Module):
    def __init__(self, d):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()] if cin == 3 else [gated(cin, v, 1, d)]
            cin = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class Block(nn.Module):
    def __init__(self, cin, cout, stride, d, gate_second=True):
        super().__init__()
        self.conv1 = gated(cin, cout, stride, d)
        if gate_second:
            self.conv2 = gated(cout, cout, 1, d, act=False)  # gated output meets the dense shortcut
        else:
            self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18FBS(nn.Module):
    def __init__(self, d, gate_second=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [Block(cin, cout, stride, d, gate_second), Block(cout, cout, 1, d, gate_second)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand (gated), 3x3 depthwise (gated, or plain behind the expand
    gate), 1x1 project (plain, no ReLU), the shortcut where the shape allows."""

    def __init__(self, cin, cout, stride, t, d, gate_dw):
        super().__init__()
        hid = cin * t
        self.exp = gated(cin, hid, 1, d, kernel=1) if t != 1 else None
        if gate_dw:
            self.dw = gated(hid, hid, stride, d, groups=hid)
        else:
            self.dw = nn.Sequential(nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
                                    nn.ReLU6())
        self.proj = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.proj(self.dw(x if self.exp is None else self.exp(x)))
        return x + y if self.res else y


class MobileNetV2FBS(nn.Module):
    # (expansion t, channels, repeats, first stride), as torchvision's MobileNetV2
    CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, d, gate_dw=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        blocks, cin = [], 32
        for t, c, n, s in self.CFG:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t, d, gate_dw))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6())
        self.fc = nn.Linear(1280, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1), 1))


MODELS = {"vgg16_fbs": VGG16FBS, "resnet18_fbs": ResNet18FBS,
          "resnet18_fbs_inner": lambda d: ResNet18FBS(d, gate_second=False),
          "mobilenetv2_fbs": MobileNetV2FBS, "mobilenetv2_fbs_expand": lambda d: MobileNetV2FBS(d, gate_dw=False)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16_fbs,resnet18_fbs")
    ap.add_argument("--densities", default="1.0,0.75,0.5,0.25")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--opset", type=int, default=13)
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out_dir, exist_ok=True)
    for name in a.models.split(","):
        if name not in MODELS:
            raise SystemExit("unknown model %r (choose from %s)" % (name, ", ".join(MODELS)))
        for d in (float(v) for v in a.densities.split(",")):
            torch.manual_seed(0)  # the same weights at every density
            m = MODELS[name](d)
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 2.0)
            m.eval()
            path = os.path.join(a.out_dir, "%s_d%d.onnx" % (name, round(d * 100)))
            torch.onnx.export(m, torch.randn(1, 3, 224, 224), path, opset_version=a.opset, input_names=["image"],
                              output_names=["logits"])
            print(path, flush=True)


if __name__ == "__main__":
    main()
