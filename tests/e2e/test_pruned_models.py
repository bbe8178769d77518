#!/usr/bin/env python3
"""Static channel pruning (design.md §6) on models pruned the ways PyTorch users prune, checked
live against ONNX Runtime on the same file:

  slim        network slimming: BN scale and shift zeroed (exporter folds BN into the conv)
  slim_bn     the same, exported with BatchNormalization kept (Sluice folds it)
  slim_beta   BN scale zeroed, shift kept: dead channels are constants relu(beta) != 0; they
              may be folded into a reader's bias only where the reader has no zero padding
  ln          torch.nn.utils.prune.ln_structured on conv weights (zero filters, bias kept)
  ln_in       ln_structured on dim 1 (input channels of the convs and the FC): the producer's
              channels that no reader uses go, whatever they hold
  mask        filters untouched, a constant 0/1 channel mask multiplied in after each ReLU
              (how mask-based pruning tools keep shapes); a second mask scales some kept
              channels by -1 after the ReLU, which cannot move into the conv and must stay
  where       the same 0/1 mask applied with torch.where(mask, x, 0)
  alldead     every channel of one conv slimmed away: all but one go (the layer keeps a channel),
              and all but one of the conv before it, which it no longer reads
  where_full  full-size masks: torch.where(mask > 0, x, torch.zeros_like(x)) (the zeros a
              [1, C, H, W] constant) and x * mask.expand_as(x)
  frozen      slim, with torchvision's FrozenBatchNorm2d (x * scale + shift: Mul + Add after a
              conv without bias), which Sluice folds into the conv before pruning
  lowered     slim, with BN written out as (x - mean) * scale + beta (Sub, Mul, Add)
  residual    dead channels inside and at the output of residual blocks: the block-internal
              ones go, the ones meeting the residual Add stay (dependency group)
  preact      BN -> ReLU -> conv with the BN reading a shared tensor (pre-activation ResNet,
              DenseNet): BN channels with scale 0 go from the BN and its readers
  act         dead filters behind activations that do not fuse into the conv, written the
              ways PyTorch exports them: Tanh, SiLU (x * sigmoid(x)), GELU (x * (1 + erf)
              / 2), hardswish (x * hardsigmoid(x)) and x * 0.5 + 1: each dead channel is the
              constant f(bias), removed where it is 0 or no padding reads it
  prelu       dead channels through PReLU (per-channel and single slope, on maps and on Linear
              features) and a per-channel scale after it, whose constants are compacted too
  decoder     dead channels read by a ConvTranspose (a U-Net decoder step): zeros go, a
              non-zero constant stays (the transposed conv spreads it unevenly)
  se          squeeze-and-excitation blocks (Sigmoid and Hardsigmoid): a dead 0 channel goes with
              its SE convs' channels; a non-zero constant, scaled per input, stays
  relu_bn     conv -> ReLU -> BatchNorm (a BN that cannot fold): the BN maps a dead channel to a
              constant, folded where no padding reads it, its parameters compacted
  heads       dead channels read by a Linear on the flattened map (LeNet-style: each channel
              is H*W columns) and by a Linear after x.mean((2, 3)) (ReduceMean, not GAP)
  mlp         ln_structured on Linear layers (dim 0: zero weight rows): a Linear's dead output
              features go, their constants (through ReLU, Tanh) folded into the next Linear's
              bias, with one Gemm stored untransposed (transB = 0, as other exporters write it)
  mobilenet   slimmed expansion channels of an inverted residual (1x1 expand, ReLU6, 3x3
              depthwise, 1x1 project): they go through the depthwise conv, whose constant
              outputs fold into the projection's bias; again with MobileNetV3's hardswish,
              which opset 13 writes as x * HardSigmoid(x)
  resident    a ResNet-style net (7x7/2 stem, 3x3/2 max pool, basic blocks, a stride-2 block
              with a 1x1 downsample) slimmed from 32/64 to 20/39 channels on a 96x96 input:
              its thin convs may run on the direct kernel with the activations between them
              in resident planes; checked with `--planes resident` and `--planes nhwc`, on 1 and
              2 threads (inspect says whether planes were kept: the kernel choice is measured)

For each: outputs equal ORT (batch 1 and 3), the channels removed per layer equal what the
construction says may be removed, executed MACs equal the count of the compacted network,
dense MACs the model's, and `inspect` says why the rest stayed.

    .venv/bin/python tests/e2e/test_pruned_models.py --sluice build/sluice --work-dir build/e2e_pruned
"""
import functools
import glob
import json
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_util  # noqa: E402
from e2e_util import check, finish, parse_args  # noqa: E402


# The MACs checked here are those of the compacted network on dense kernels. A conv that keeps
# dead channels (with their zero filters) can be half zero, and then the sparse kernel is timed
# against the dense one at load: where it wins, its executed MACs count only the non-zero
# weights, and two sessions of one file (inspect's --json and its text, say) can choose
# differently. Every run and inspect here is on dense kernels unless it says --sparse itself.
def _dense_kernels(args):
    return tuple(args) if "--sparse" in args else tuple(args) + ("--sparse", "off")


def run_sluice(a, cmd, *args, **kw):
    return e2e_util.run_sluice(a, cmd, *(_dense_kernels(args) if cmd in ("run", "inspect") else args), **kw)


def run_vs_ort(a, path, x, tag, *extra, **kw):
    return e2e_util.run_vs_ort(a, path, x, tag, *_dense_kernels(extra), **kw)





REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Plain(nn.Module):
    """conv-bn-relu x4 (3x3 pad 1, 3x3 pad 1 + maxpool, 1x1 pad 0, 3x3 pad 1), GAP, FC."""
    SPEC = [(1, 16, 3, 1), (16, 32, 3, 1), (32, 32, 1, 0), (32, 24, 3, 1)]

    def __init__(self, bias=False):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(i, o, k, padding=p, bias=bias) for i, o, k, p in self.SPEC])
        self.bns = nn.ModuleList([nn.BatchNorm2d(o) for _, o, _, _ in self.SPEC])
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(b(c(x)))
            if i == 1:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def macs(self, keep, hw=28):
        """MACs per image with keep[i] output channels of conv i (input channels follow)."""
        total, cin, size = 0, 1, hw
        for i, (_, _, k, _) in enumerate(self.SPEC):
            total += keep[i] * cin * k * k * size * size
            cin = keep[i]
            if i == 1:
                size //= 2
        return total + cin * 10


class Masked(Plain):
    """Plain with a constant per-channel mask multiplied in after each ReLU."""

    def __init__(self):
        super().__init__()
        for i, (_, o, _, _) in enumerate(self.SPEC):
            self.register_buffer("mask%d" % i, torch.ones(1, o, 1, 1))

    def forward(self, x):
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(b(c(x))) * getattr(self, "mask%d" % i)
            if i == 1:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WhereMasked(Plain):
    """Plain with a constant boolean channel mask applied with torch.where(mask, x, 0)."""

    def __init__(self):
        super().__init__()
        for i, (_, o, _, _) in enumerate(self.SPEC):
            self.register_buffer("keep%d" % i, torch.ones(1, o, 1, 1, dtype=torch.bool))

    def forward(self, x):
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
            x = torch.where(getattr(self, "keep%d" % i), F.relu(b(c(x))), x.new_zeros(()))
            if i == 1:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WhereFull(Plain):
    """Plain with full-size masks, as other pruning code writes them: torch.where(mask > 0, x,
    torch.zeros_like(x)) with a float mask (the export's zeros are a [1, C, H, W] constant) on
    even layers, x * mask.expand_as(x) (a [1, C, H, W] constant) on odd ones."""

    def __init__(self):
        super().__init__()
        for i, (_, o, _, _) in enumerate(self.SPEC):
            self.register_buffer("keep%d" % i, torch.ones(1, o, 1, 1))

    def forward(self, x):
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
            y, keep = F.relu(b(c(x))), getattr(self, "keep%d" % i)
            x = torch.where(keep > 0, y, torch.zeros_like(y)) if i % 2 == 0 else y * keep.expand_as(y)
            if i == 1:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class LoweredBN(nn.Module):
    """BatchNorm2d's inference arithmetic written out: (x - mean) * scale + beta."""

    def __init__(self, bn):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        bn = self.bn
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(1, -1, 1, 1)
        return (x - bn.running_mean.reshape(1, -1, 1, 1)) * scale + bn.bias.reshape(1, -1, 1, 1)


def randomise_bn(m):
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.2, 0.2)


def plain_case(kind):
    """Returns (model, expected removed per conv)."""
    torch.manual_seed(3)
    m = (Masked() if kind == "mask" else WhereMasked() if kind == "where" else WhereFull() if kind == "where_full"
         else Plain(bias=(kind == "ln")))
    randomise_bn(m)
    removed = []
    with torch.no_grad():
        for i, (c, b) in enumerate(zip(m.convs, m.bns)):
            n = c.out_channels
            dead = torch.randperm(n)[: n // 2]
            reader_pads = i + 1 < len(Plain.SPEC) and Plain.SPEC[i + 1][3] > 0  # the FC head has no padding
            if kind == "alldead":  # conv 1 entirely slimmed away: all but one of its channels go, and
                if i == 1:           # conv 0's too, which conv 1 (its BN folded in) no longer reads
                    b.weight.zero_()
                    b.bias.zero_()
                removed.append(n - 1 if i <= 1 else 0)
            elif kind in ("slim", "slim_bn", "frozen", "lowered"):
                b.weight[dead] = 0
                b.bias[dead] = 0
                removed.append(len(dead))
            elif kind == "slim_beta":
                half = len(dead) // 2
                b.weight[dead] = 0
                b.bias[dead[:half]] = 0  # constant 0: always removable
                b.bias[dead[half:]] = torch.rand(len(dead) - half) * 0.5 + 0.1  # relu(beta) > 0
                removed.append(half if reader_pads else len(dead))
            elif kind == "mask":
                mask = getattr(m, "mask%d" % i)
                mask[0, dead] = 0
                if i == 2:  # a negative scale after the ReLU: this Mul stays, and so do its channels
                    mask[0, dead[0]] = -1.0
                removed.append(0 if i == 2 else len(dead))
            elif kind == "ln":
                tprune.ln_structured(c, "weight", amount=0.5, n=1, dim=0)
                tprune.remove(c, "weight")
                # bias stays: a dead channel is relu(bn(bias)), zero or not
                z = (c.weight.flatten(1).abs().sum(1) == 0).nonzero().flatten()
                const = F.relu((c.bias[z] - b.running_mean[z]) / torch.sqrt(b.running_var[z] + b.eps) * b.weight[z] + b.bias[z])
                removed.append(int((const == 0).sum()) if reader_pads else len(z))
            elif kind == "where":  # torch.where(mask, x, 0): the same mask, folded the same way
                getattr(m, "keep%d" % i)[0, dead] = False
                removed.append(len(dead))
            elif kind == "where_full":  # full-size zeros and masks: folded as the [1, C, 1, 1] ones
                getattr(m, "keep%d" % i)[0, dead] = 0
                removed.append(len(dead))
            elif kind == "ln_in":  # the reader's input channels zeroed: this conv's matching channels go
                reader = m.convs[i + 1] if i + 1 < len(m.convs) else m.fc
                tprune.ln_structured(reader, "weight", amount=0.5, n=1, dim=1)
                tprune.remove(reader, "weight")
                removed.append(int((reader.weight.transpose(0, 1).flatten(1).abs().sum(1) == 0).sum()))
    if kind == "frozen":  # the same slimmed statistics in torchvision's FrozenBatchNorm2d
        from torchvision.ops.misc import FrozenBatchNorm2d
        frozen = []
        for b in m.bns:
            f = FrozenBatchNorm2d(b.num_features, eps=b.eps)
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(f, k).copy_(getattr(b, k).detach())
            frozen.append(f)
        m.bns = nn.ModuleList(frozen)
    elif kind == "lowered":
        m.bns = nn.ModuleList([LoweredBN(b) for b in m.bns])
    m.eval()
    return m, removed


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def residual_case():
    torch.manual_seed(4)
    m = Residual()
    randomise_bn(m)
    with torch.no_grad():
        for bn in (m.bn, m.blocks[0].b1, m.blocks[0].b2, m.blocks[1].b1, m.blocks[1].b2):
            dead = torch.randperm(16)[:6]
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    m.eval()
    # block-internal convs (c1) lose their 6 dead channels; stem and c2 meet an Add: kept
    return m, {"/blocks/blocks.0/c1/Conv": 6, "/blocks/blocks.1/c1/Conv": 6, "/stem/Conv": 0,
               "/blocks/blocks.0/c2/Conv": 0, "/blocks/blocks.1/c2/Conv": 0}


class SelfResidual(nn.Module):
    """y = relu(stem(x)); z = relu(y + bn(c1(y))): c1 reads the stream and writes into it;
    a 1x1 conv to 8, GAP, FC."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.c1, self.bn = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(8, 10)

    def forward(self, x):
        y = F.relu(self.stem(x))
        z = F.relu(y + self.bn(self.c1(y)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c(z), 1), 1))


class Inverted(nn.Module):
    """stem 1->16 3x3, then 1x1 expand 16->64, depthwise 3x3, 1x1 project 64->24 (ReLU6, BN), GAP, FC.
    act=nn.Hardswish: MobileNetV3's activation, which the opset-13 export writes as
    x * HardSigmoid(x)."""

    def __init__(self, act=nn.ReLU6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), act())
        self.expand = nn.Sequential(nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), act())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.BatchNorm2d(64), act())
        self.project = nn.Sequential(nn.Conv2d(64, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.project(self.dw(self.expand(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @staticmethod
    def macs(e, hw=28):
        return 16 * 9 * hw * hw + e * 16 * hw * hw + e * 9 * hw * hw + 24 * e * hw * hw + 24 * 10


def mobilenet_case(a, act=nn.ReLU6, name="mobilenet"):
    torch.manual_seed(6)
    m = Inverted(act)
    randomise_bn(m)
    dead = torch.randperm(64)[:22]
    with torch.no_grad():
        m.expand[1].weight[dead] = 0
        m.expand[1].bias[dead] = 0
    m.eval()
    insp, st = run_case(a, name, m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    through = [r for n, r in got.items() if "through depthwise" in n]
    check(len(through) == 1 and through[0]["removed"] == 22,
          "%s: the 22 dead expansion channels go through the depthwise conv (%s)" % (name, list(got.values())))
    check(through and through[0]["folded"] > 0,
          "%s: the depthwise conv's constant outputs fold into the projection's bias" % name)
    check(st["dense_macs"] == 3 * Inverted.macs(64) and st["executed_macs"] == 3 * Inverted.macs(42),
          "%s: dense MACs %d = model's %d, executed %d = compacted network's %d" % (
              name, st["dense_macs"], 3 * Inverted.macs(64), st["executed_macs"], 3 * Inverted.macs(42)))


class GroupedBlock(nn.Module):
    """A ResNeXt-style bottleneck without the residual: stem 3x3 -> 16, 1x1 -> 32 (BN, ReLU),
    grouped 3x3 (4 groups of 8) -> 32 (BN, ReLU), 1x1 -> 16 (BN, ReLU), GAP, FC."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.expand(self.grouped(self.reduce(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def grouped_case(a):
    """Slimmed BNs on both sides of a grouped conv: the 1x1 conv before it loses 2, 3, 2 and 2
    channels in its four input groups, the grouped conv 1, 2, 1, 1 in its output groups; as many
    go from every group (2 and 1), the rest stay with a reason."""
    torch.manual_seed(8)
    m = GroupedBlock()
    randomise_bn(m)
    with torch.no_grad():
        for bn, dead in ((m.reduce[1], [0, 1, 8, 9, 10, 16, 17, 24, 25]), (m.grouped[1], [3, 8, 9, 17, 30])):
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    m.eval()
    insp, st = run_case(a, "grouped", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    red, grp = got.get("/reduce/reduce.0/Conv", {}), got.get("/grouped/grouped.0/Conv", {})
    check(red.get("removed") == 8 and grp.get("removed") == 4,
          "grouped: 2 dead channels go from each input group and 1 from each output group (%s)" % list(got.values()))
    check("every group of a grouped conv loses as many" in red.get("kept_reason", "") and
          "every group of a grouped conv loses as many" in grp.get("kept_reason", ""),
          "grouped: inspect says why the extra dead channels stay (%s, %s)" % (red, grp))
    px = 28 * 28
    want = 3 * (16 * 9 * px + 24 * 16 * px + 28 * 6 * 9 * px + 16 * 28 * px + 16 * 10)
    dense = 3 * (16 * 9 * px + 32 * 16 * px + 32 * 8 * 9 * px + 16 * 32 * px + 16 * 10)
    check(st["executed_macs"] == want and st["dense_macs"] == dense,
          "grouped: executed MACs %d = the compacted net's %d, dense %d = the model's %d (a grouped conv's are C / group "
          "per output)" % (st["executed_macs"], want, st["dense_macs"], dense))


def export(m, path, keep_bn):
    kw = {"training": torch.onnx.TrainingMode.PRESERVE} if keep_bn else {}
    torch.onnx.export(m, torch.randn(1, 1, 28, 28), path, opset_version=13, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, **kw)


def check_inspect_macs(a, path, insp, name, extra=()):
    """inspect's text gives each compacted layer's MACs as "executed of dense M MACs", the
    numbers of its --json."""
    text = run_sluice(a, "inspect", path, "--shape", "image=1x1x28x28", *extra).stdout
    compacted = 0
    for nd in insp["nodes"]:
        if not 0 < nd["executed_macs"] < nd["dense_macs"]:
            continue
        compacted += 1
        lines = [ln for ln in text.splitlines() if ln.lstrip().startswith("%s '%s' [" % (nd["op"], nd["name"]))]
        m = re.search(r"  ([0-9.e+-]+) of ([0-9.e+-]+) M MACs$", lines[0]) if len(lines) == 1 else None
        check(m is not None and abs(float(m.group(1)) * 1e6 - nd["executed_macs"]) <= 1e-5 * nd["executed_macs"] + 1
              and abs(float(m.group(2)) * 1e6 - nd["dense_macs"]) <= 1e-5 * nd["dense_macs"] + 1,
              "%s: inspect gives '%s' %s MACs as executed of dense: %s" % (name, nd["name"],
                                                                      (nd["executed_macs"], nd["dense_macs"]), lines))
    check(compacted > 0 or insp["channels_removed"] == 0, "%s: no layer runs fewer MACs than dense" % name)


def run_case(a, name, m, keep_bn, extra=()):
    path = os.path.join(a.work_dir, name + ".onnx")
    export(m, path, keep_bn)
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x1x28x28", *extra).stdout)
    check_inspect_macs(a, path, insp, name, extra)
    unexplained = [r for r in insp["pruning"] if r["dead"] + r.get("unread", 0) > r["removed"] and not r["kept_reason"]]
    check(not unexplained, "%s: inspect gives a reason wherever dead channels stay (%s)" % (name, unexplained))
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        _, _, st = run_vs_ort(a, path, rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
                              "%s_batch%d" % (name, batch), *extra)
    return insp, st


class ConcatNet(nn.Module):
    """Two branches concatenated (Inception/DenseNet style): 3x3 -> 8 and 1x1 -> 6, Concat,
    a padded 3x3 conv on the 14 channels, GAP, FC."""

    def __init__(self):
        super().__init__()
        self.b1, self.n1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b2, self.n2 = nn.Conv2d(1, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.c3, self.n3 = nn.Conv2d(14, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        y = torch.cat([F.relu(self.n1(self.b1(x))), F.relu(self.n2(self.b2(x)))], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.n3(self.c3(y))), 1), 1))


def concat_case(a):
    torch.manual_seed(6)
    m = ConcatNet()
    randomise_bn(m)
    with torch.no_grad():
        for bn, dead in ((m.n1, [0, 3, 5]), (m.n2, [1, 4])):
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    m.eval()
    insp, st = run_case(a, "concat", m, keep_bn=False)
    got = {r["node"]: r["removed"] for r in insp["pruning"]}
    check(got.get("/b1/Conv") == 3 and got.get("/b2/Conv") == 2,
          "concat: dead channels removed from both branches behind the Concat (%s)" % got)
    px = 28 * 28
    want = 3 * (5 * 9 * px + 4 * px + 12 * 9 * 9 * px + 12 * 10)
    check(st["executed_macs"] == want, "concat: executed MACs %d = the compacted net's %d (the 3x3 conv reads 9 of 14)" % (
        st["executed_macs"], want))


class ConcatResidual(nn.Module):
    """A residual stream added to a Concat of two branches (a + cat(b1(a), b2(a))), the Add not
    fused into a conv: stem 3x3 -> 8 (BN, ReLU); b1 3x3 -> 4 and b2 1x1 -> 4 (BN each); Add,
    ReLU, a padded 3x3 conv -> 6, GAP, FC."""

    def __init__(self):
        super().__init__()
        self.c0, self.n0 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b1, self.n1 = nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b2, self.n2 = nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.c3, self.fc = nn.Conv2d(8, 6, 3, padding=1), nn.Linear(6, 10)

    def forward(self, x):
        a = F.relu(self.n0(self.c0(x)))
        y = F.relu(a + torch.cat([self.n1(self.b1(a)), self.n2(self.b2(a))], 1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c3(y), 1), 1))


def concat_residual_case(a):
    """Channels 0 and 7 are dead in the stem and in the branch each comes from (b1's 0, b2's 3):
    they go from the stream, both branches and the readers; b1's dead 1 stays (the stem's 1 is
    live)."""
    torch.manual_seed(7)
    m = ConcatResidual()
    randomise_bn(m)
    with torch.no_grad():
        for bn, dead in ((m.n0, [0, 7]), (m.n1, [0, 1]), (m.n2, [3])):
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    m.eval()
    insp, st = run_case(a, "concat_residual", m, keep_bn=False)
    got = {r["node"]: r["removed"] for r in insp["pruning"]}
    check(got.get("residual group {/c0/Conv, /b1/Conv, /b2/Conv}") == 2,
          "concat_residual: the 2 channels dead in every member go (%s)" % got)
    px = 28 * 28
    want = 3 * (6 * 9 * px + 3 * 6 * 9 * px + 3 * 6 * px + 6 * 6 * 9 * px + 6 * 10)
    check(st["executed_macs"] == want, "concat_residual: executed MACs %d = the compacted net's %d" % (
        st["executed_macs"], want))


class PreAct(nn.Module):
    """Pre-activation blocks, as in the network-slimming paper's ResNet-164 and DenseNet-40:
    BN -> ReLU before each conv, the BN reading a tensor that others read too (the residual
    stream; a DenseNet concatenation), so it cannot fold into a conv. stem 3x3 -> 16; block:
    BN, ReLU, 3x3 (padded) -> 16, added to the stream; dense: concat [stream, 1x1 -> 8], BN,
    ReLU, 1x1 -> 12 (no padding); GAP, FC."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1, self.c1 = nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.grow = nn.Conv2d(16, 8, 1)
        self.bn2, self.c2 = nn.BatchNorm2d(24), nn.Conv2d(24, 12, 1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.c1(F.relu(self.bn1(x)))
        y = torch.cat([x, self.grow(x)], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c2(F.relu(self.bn2(y))), 1), 1))

    @staticmethod
    def macs(k1, k2, hw=28):
        return (9 * 16 + 16 * k1 * 9 + 16 * 8 + k2 * 12) * hw * hw + 12 * 10


def preact_case(a):
    """bn1: 4 channels with scale and shift 0 (constant 0: they go, though the 3x3 reader
    pads) and 2 with scale 0, shift 0.3 (constant relu(0.3), read through padding: they stay);
    bn2: 5 channels with scale 0 and shifts +-0.4 (constants relu(shift) read by a 1x1 conv:
    they go, folded into its bias)."""
    torch.manual_seed(7)
    m = PreAct()
    randomise_bn(m)
    with torch.no_grad():
        m.bn1.weight[[0, 3, 5, 9, 11, 12]] = 0
        m.bn1.bias[[0, 3, 5, 9]] = 0
        m.bn1.bias[[11, 12]] = 0.3
        m.bn2.weight[[1, 2, 7, 17, 20]] = 0
        m.bn2.bias[[1, 2, 7, 17, 20]] = torch.tensor([0.4, -0.4, 0.4, -0.4, 0.4])
    m.eval()
    insp, st = run_case(a, "preact", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    b1, b2 = got.get("/bn1/BatchNormalization"), got.get("/bn2/BatchNormalization")
    check(b1 is not None and b1["removed"] == 4 and b1["dead"] == 6 and "padding" in b1["kept_reason"],
          "preact: bn1 loses its 4 zero channels and keeps the 2 constant 0.3 ones a padded conv reads (%s)" % b1)
    check(b2 is not None and b2["removed"] == 5 and b2["folded"] == 3,
          "preact: bn2 loses 5 channels behind the concat, the 3 relu(0.4) ones folded into the 1x1 conv's bias (%s)" % b2)
    check(st["dense_macs"] == 3 * PreAct.macs(16, 24) and st["executed_macs"] == 3 * PreAct.macs(12, 19),
          "preact: dense MACs %d = model's %d, executed %d = compacted network's %d" % (
              st["dense_macs"], 3 * PreAct.macs(16, 24), st["executed_macs"], 3 * PreAct.macs(12, 19)))


class SPP(nn.Module):
    """y = relu(bn(stem)) reaches one Concat three times (y, maxpool5(y), maxpool9(y), as in
    YOLO's spatial pyramid pooling), then a 1x1 conv; the stem is also a shortcut. Each reader
    is rewritten for channels at one offset, so the dead BN channels must stay (a reviewer's
    wrong answer: the 1x1 conv was shrunk three times)."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.bn(x))
        y = self.c(torch.cat([y, F.max_pool2d(y, 5, 1, 2), F.max_pool2d(y, 9, 1, 4)], 1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x + y, 1), 1))


def spp_case(a):
    torch.manual_seed(8)
    m = SPP()
    randomise_bn(m)
    with torch.no_grad():
        m.bn.weight[[1, 4, 6]] = 0
        m.bn.bias[[1, 4, 6]] = 0
    m.eval()
    insp, _ = run_case(a, "spp", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    b = got.get("/bn/BatchNormalization")
    check(b is not None and b["removed"] == 0 and "two paths" in b["kept_reason"],
          "spp: the BN's dead channels reach one Concat three times and stay, with the reason (%s)" % b)


class CopyPath(nn.Module):
    """Dead channels reaching their reader through ops that only copy values: reflect Pad,
    nearest upsampling, replicate Pad (as decoders and TF-style explicit padding write them),
    then an unpadded 3x3 conv, GAP, FC; or (zero_pad) through a zero Pad, where the zero
    channels stay zero but a non-zero constant one would get a border of zeros."""

    def __init__(self, zero_pad, bilinear=False):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 6, 3)
        self.fc = nn.Linear(6, 10)
        self.zero_pad = zero_pad
        self.bilinear = bilinear

    def forward(self, x):
        y = F.relu(self.stem(x))
        if self.bilinear:  # a decoder's upsampling: interpolates, so only zero channels pass exactly
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        elif self.zero_pad:
            y = F.pad(y, (1, 1, 1, 1))
        else:
            y = F.pad(F.interpolate(F.pad(y, (1, 1, 1, 1), mode="reflect"), scale_factor=2, mode="nearest"),
                      (0, 1, 2, 0), mode="replicate")
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.c(y)), 1), 1))


def dead_stem_case(a, name, m, constant_stays, path):
    """m.stem loses filters 1, 4 and 6: channels 1 and 6 are 0, channel 4 the constant
    relu(0.7). Either the zero channels go and the constant stays (a zero border on the way),
    and inspect says why, or all three go, the constant folded into the reader's bias."""
    with torch.no_grad():
        m.stem.weight[[1, 4, 6]] = 0
        m.stem.bias[[1, 6]] = 0
        m.stem.bias[4] = 0.7
    m.eval()
    insp, _ = run_case(a, name, m, keep_bn=False)
    r = {r["node"]: r for r in insp["pruning"]}.get("/stem/Conv", {})
    if constant_stays:
        check(r.get("removed") == 2 and ("padd" in r.get("kept_reason", "") or "interpolates" in r.get("kept_reason", "")),
              "%s: the zero channels go through %s, the constant 0.7 (a zero border) stays, and inspect says "
              "why (%s)" % (name, path, r))
    else:
        check(r.get("removed") == 3 and r.get("folded") == 1,
              "%s: the 3 dead channels go through %s, the constant 0.7 folded (%s)" % (name, path, r))


def copy_path_case(a):
    for zero_pad in (False, True):
        torch.manual_seed(9)
        # (the zero Pad joins the unpadded conv's pads: the same border of zeros)
        dead_stem_case(a, "copy_path_zero_pad" if zero_pad else "copy_path", CopyPath(zero_pad), zero_pad,
                       "a zero Pad" if zero_pad else "reflect Pad, nearest Resize and replicate Pad")
    torch.manual_seed(9)
    dead_stem_case(a, "bilinear_path", CopyPath(False, bilinear=True), True, "a bilinear Resize")


class AvgPoolPath(nn.Module):
    """Dead channels through a padded AveragePool (3x3, pad 1), then an unpadded 3x3 conv, GAP,
    FC. With count_include_pad the border windows average zeros in: a zero channel stays zero,
    a non-zero constant does not stay itself. Without it (also in ceil mode) the windows
    average the map's values only, and a constant stays itself."""

    def __init__(self, include_pad, stride, ceil):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, ceil_mode=ceil, count_include_pad=include_pad)
        self.c = nn.Conv2d(8, 6, 3)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        y = self.pool(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.c(y)), 1), 1))


def avg_pool_case(a):
    for include_pad, stride, ceil in ((True, 1, False), (False, 1, False), (False, 2, True), (True, 2, True)):
        torch.manual_seed(10)
        name = "avg_pool_%s_s%d%s" % ("include_pad" if include_pad else "exclude_pad", stride, "_ceil" if ceil else "")
        dead_stem_case(a, name, AvgPoolPath(include_pad, stride, ceil), include_pad,
                       "the zero-padded average" if include_pad else "an average of the map's values only")


class Acts(nn.Module):
    """Five convs, each followed by an activation that stays a separate node (or several):
    c1 3x3 -> tanh -> c2 1x1 -> silu -> c3 3x3 -> gelu -> c4 3x3 -> hardswish -> c5 1x1 ->
    x * 0.5 + 1 -> GAP -> FC. All convs 8 channels; 3x3 ones padded."""

    def __init__(self):
        super().__init__()
        self.c = nn.ModuleList([nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1),
                                nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)])
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.tanh(self.c[0](x))
        x = F.silu(self.c[1](x))
        x = F.gelu(self.c[2](x))
        x = F.hardswish(self.c[3](x))
        x = self.c[4](x) * 0.5 + 1
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @staticmethod
    def macs(k, hw=28):
        return (9 * k[0] + k[0] * k[1] + 9 * k[1] * k[2] + 9 * k[2] * k[3] + k[3] * k[4]) * hw * hw + k[4] * 10


def activations_case(a):
    """Dead filters (zero weights) with these biases, and what may go:
    c1 [1, 4]: tanh(0) = 0, go; [6]: tanh(0.7), read by the unpadded c2, goes, folded;
    c2 [0, 3]: silu(0) = 0, go though c3 pads; [5]: silu(0.5), read through c3's padding, stays;
    c3 [2, 7]: gelu(0) = 0, go;
    c4 [1]: hardswish(0) = 0, goes; [4]: hardswish(1), read by the unpadded c5, goes, folded;
    c5 [3]: 0 * 0.5 + 1 = 1, read by the FC head through GAP, goes, folded."""
    torch.manual_seed(9)
    m = Acts()
    dead = [([1, 4, 6], [0, 0, 0.7]), ([0, 3, 5], [0, 0, 0.5]), ([2, 7], [0, 0]), ([1, 4], [0, 1.0]), ([3], [0])]
    with torch.no_grad():
        for conv, (chs, biases) in zip(m.c, dead):
            conv.weight[chs] = 0
            conv.bias[chs] = torch.tensor(biases, dtype=torch.float32)
    m.eval()
    insp, st = run_case(a, "act", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    want = [(3, 1), (2, 0), (2, 0), (2, 1), (1, 1)]  # (removed, folded) per conv
    have = [(got[n]["removed"], got[n]["folded"]) if n in got else None for n in ["/c.%d/Conv" % i for i in range(5)]]
    check(have == want, "act: (removed, folded) per conv %s, expected %s" % (have, want))
    check("padding" in got["/c.1/Conv"]["kept_reason"],
          "act: silu(0.5), read through padding, stays, and inspect says why (%s)" % got["/c.1/Conv"])
    k = [5, 6, 6, 6, 7]
    check(st["dense_macs"] == 3 * Acts.macs([8] * 5) and st["executed_macs"] == 3 * Acts.macs(k),
          "act: dense MACs %d = model's %d, executed %d = compacted network's %d" % (
              st["dense_macs"], 3 * Acts.macs([8] * 5), st["executed_macs"], 3 * Acts.macs(k)))


class MaskAfter(nn.Module):
    """conv 1->8 3x3 pad 1, `act`, times a constant 0/1 channel mask [1, 8, 1, 1] (masks applied
    after the activation, MobileNet style), conv 8->6 3x3 pad 1, GAP, Linear(6, 10)."""

    def __init__(self, act):
        super().__init__()
        self.act, self.c1, self.c2, self.fc = act, nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1), nn.Linear(6, 10)
        m = torch.ones(1, 8, 1, 1)
        m[:, [1, 4, 6]] = 0
        self.register_buffer("mask", m)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c2(self.act(self.c1(x)) * self.mask), 1), 1))


def mask_after_activation_case(a):
    """A 0/1 mask after an activation A with A(0) = 0 zeroes its channels whatever A is: the 3
    masked channels go after relu6 (Relu then Clip), hardtanh, leaky relu, SiLU and hardswish.
    After a sigmoid (sigmoid(0) = 0.5) the mask stays a Mul: nothing removed, same answer."""
    acts = [("relu6", F.relu6, 3), ("hardtanh", F.hardtanh, 3), ("leaky", lambda t: F.leaky_relu(t, 0.1), 3),
            ("silu", F.silu, 3), ("hardswish", F.hardswish, 3), ("sigmoid", torch.sigmoid, 0)]
    for name, act, want in acts:
        torch.manual_seed(13)
        insp, _ = run_case(a, "mask_after_" + name, MaskAfter(act).eval(), keep_bn=False)
        got = {r["node"]: r["removed"] for r in insp["pruning"]}.get("/c1/Conv", 0)
        check(got == want, "mask_after_%s: %d channels of c1 removed, expected %d" % (name, got, want))


class DepthwiseOwnZeros(nn.Module):
    """conv 1->8 1x1, ReLU, depthwise 3x3 pad 1 (bias or not), ReLU, conv 8->6 1x1, GAP, Linear(6, 10)."""

    def __init__(self, bias):
        super().__init__()
        self.c1, self.dw = nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=bias)
        self.c2, self.fc = nn.Conv2d(8, 6, 1), nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c2(F.relu(self.dw(F.relu(self.c1(x))))), 1), 1))


def depthwise_own_zeros_case(a):
    """A depthwise conv's own zero filters (channels 2 and 5; bias 0, or none): its output there
    is 0, so they go from it and, unread, from the conv before it too. With bias 0.4 on channel
    5 (relu(0.4), read by the unpadded 1x1 conv), it goes as well, folded into that conv's bias."""
    for name, bias, b5 in (("dw_own_zeros", True, 0.0), ("dw_own_zeros_nobias", False, 0.0), ("dw_own_zero_bias", True, 0.4)):
        torch.manual_seed(14)
        m = DepthwiseOwnZeros(bias)
        with torch.no_grad():
            m.dw.weight[[2, 5]] = 0
            if bias:
                m.dw.bias[[2, 5]] = torch.tensor([0.0, b5])
        insp, _ = run_case(a, name, m.eval(), keep_bn=False)
        got = [(r["node"], r["removed"], r["folded"]) for r in insp["pruning"] if r["removed"]]
        want = [("/c1/Conv through depthwise /dw/Conv", 2, 1 if b5 else 0)]
        check(got == want, "%s: (layer, removed, folded) %s, expected %s" % (name, got, want))


class PReLUNet(nn.Module):
    """PReLU networks (face-recognition style) with per-channel constants on the way:
    c1 3x3 pad 1 (1 -> 8) -> PReLU(8) -> c2 3x3 pad 1 (8 -> 8) -> PReLU() -> x * s (a constant
    [1, 8, 1, 1] scale that cannot move into c2: it comes after the PReLU) -> c3 1x1 (8 -> 6)
    -> PReLU(6) -> GAP -> fc1 (6 -> 16) -> PReLU(16) on the features -> fc2 (16 -> 10)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 6, 1)
        self.a1, self.a2, self.a3, self.a4 = nn.PReLU(8), nn.PReLU(), nn.PReLU(6), nn.PReLU(16)
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 10)
        self.register_buffer("s", torch.linspace(-1.5, 2.0, 8).view(1, 8, 1, 1))

    def forward(self, x):
        x = self.a2(self.c2(self.a1(self.c1(x)))) * self.s
        x = torch.flatten(F.adaptive_avg_pool2d(self.a3(self.c3(x)), 1), 1)
        return self.fc2(self.a4(self.fc1(x)))

    @staticmethod
    def macs(k1, k2, f1, hw=28):
        return (9 * k1 + 9 * k1 * k2 + k2 * 6) * hw * hw + 6 * f1 + f1 * 10


def prelu_case(a):
    """Dead filters through PReLUs and a per-channel scale, whose constants lose the removed
    channels: c1 [1, 4] (bias 0: prelu 0) go though c2 pads; [6] (bias -0.5: slope * -0.5,
    read through c2's padding) stays. c2 [0, 3] (bias 0) go; [5] (bias 0.4: 0.4 * s[5], read
    by the unpadded c3) goes, folded. fc1 features [2, 9] (zero rows, bias 0) go from fc2."""
    torch.manual_seed(12)
    m = PReLUNet()
    with torch.no_grad():
        for p in (m.a1, m.a3, m.a4):
            p.weight.uniform_(0.05, 0.6)
        m.c1.weight[[1, 4, 6]] = 0
        m.c1.bias[[1, 4, 6]] = torch.tensor([0, 0, -0.5])
        m.c2.weight[[0, 3, 5]] = 0
        m.c2.bias[[0, 3, 5]] = torch.tensor([0, 0, 0.4])
        m.fc1.weight[[2, 9]] = 0
        m.fc1.bias[[2, 9]] = 0
    m.eval()
    insp, st = run_case(a, "prelu", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    have = [(got[n]["removed"], got[n]["folded"]) if n in got else None for n in ("/c1/Conv", "/c2/Conv", "/fc1/Gemm")]
    check(have == [(2, 0), (3, 1), (2, 0)], "prelu: (removed, folded) for c1, c2, fc1 %s, expected %s" % (
        have, [(2, 0), (3, 1), (2, 0)]))
    check("padding" in got["/c1/Conv"]["kept_reason"],
          "prelu: slope * -0.5, read through padding, stays, and inspect says why (%s)" % got["/c1/Conv"])
    check(st["executed_macs"] == 3 * PReLUNet.macs(6, 5, 14) and st["dense_macs"] == 3 * PReLUNet.macs(8, 8, 16),
          "prelu: executed MACs %d = compacted network's %d (dense %d = %d)" % (
              st["executed_macs"], 3 * PReLUNet.macs(6, 5, 14), st["dense_macs"], 3 * PReLUNet.macs(8, 8, 16)))
    kernels = {n["name"]: n.get("kernel", "") for n in insp["nodes"]
               if n["op"] in ("PRelu", "Mul") and len(n["outputs"][0]["shape"]) == 4}
    check(len(kernels) == 4 and all(k.startswith("elementwise") for k in kernels.values()),
          "prelu: the PReLUs and the per-channel Mul on the maps run on the fast elementwise kernels, between NHWC "
          "convs (%s)" % kernels)


class PReLUConcat(nn.Module):
    """Two branches (3x3 pad 1 -> 8, 1x1 -> 6) concatenated, then PReLU(14), x * s + 0.25 (s a
    [1, 14, 1, 1] constant), then an unpadded 1x1 conv: each branch's channels sit at their own
    offset in the per-channel constants."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.p = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 6, 1), nn.PReLU(14)
        self.c, self.fc = nn.Conv2d(14, 5, 1), nn.Linear(5, 10)
        self.register_buffer("s", torch.linspace(-1, 2, 14).view(1, 14, 1, 1))

    def forward(self, x):
        y = self.c(self.p(torch.cat([self.a(x), self.b(x)], 1)) * self.s + 0.25)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class ReluThenBN(nn.Module):
    """conv -> ReLU -> BatchNorm (the order some code uses: the BN cannot fold into the conv):
    c1 3x3 pad 1 (1 -> 8), then c2 3x3 pad 1 (8 -> 12), then c3 1x1 (12 -> 6), GAP, FC."""

    def __init__(self):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.n2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.c3, self.fc = nn.Conv2d(12, 6, 1), nn.Linear(6, 10)

    def forward(self, x):
        x = self.n2(F.relu(self.c2(self.n1(F.relu(self.c1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c3(x), 1), 1))


class MlpBN(nn.Module):
    """Linear features with BatchNorm1d after the ReLU: conv 1 -> 4 3x3 stride 2, flatten (784),
    fc1 784 -> 32, ReLU, BatchNorm1d(32), fc2 32 -> 10."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.fc1, self.bn, self.fc2 = nn.Linear(784, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.bn(F.relu(self.fc1(torch.flatten(F.relu(self.c(x)), 1)))))


class MlpSlim(MlpBN):
    """A slimmed MLP head: MlpBN's layers with the BatchNorm1d right after fc1 (network
    slimming's L1 on its scales), then the ReLU."""

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(torch.flatten(F.relu(self.c(x)), 1)))))


def relu_bn_case(a):
    """Dead filters (weights and bias 0: relu 0) become BN's constant shift - scale * mean: c1's
    [1, 4] are read through c2's padding and stay; c2's [0, 5, 9] reach the unpadded c3 and go,
    folded into its bias, with n2's parameters compacted; c2's live channel 2, which c3 does not
    read (zero weights), goes as unread (every variance + eps > 0: the BN keeps it finite).
    BatchNorm1d on Linear features: fc1's zero rows [3, 17, 30] go, folded into fc2's bias."""
    torch.manual_seed(16)
    m = ReluThenBN()
    randomise_bn(m)
    with torch.no_grad():
        for c, dead in ((m.c1, [1, 4]), (m.c2, [0, 5, 9])):
            c.weight[dead] = 0
            c.bias[dead] = 0
        m.c3.weight[:, 2] = 0
    m.eval()
    insp, _ = run_case(a, "relu_bn", m, keep_bn=False)
    got = {r["node"]: (r["dead"], r["removed"], r["unread"], r["folded"]) for r in insp["pruning"]}
    check(got.get("/c1/Conv") == (2, 0, 0, 0) and got.get("/c2/Conv") == (3, 4, 1, 3),
          "relu_bn: (dead, removed, unread, folded) c1 (2, 0, 0, 0), c2 (3, 4, 1, 3) through the BatchNorms (%s)" % got)
    with torch.no_grad():  # var + eps = 0 at channel 2: the BN makes it inf, and 0 x inf is NaN in c3
        m.n2.running_var[2] = -m.n2.eps
    insp, _ = run_case(a, "relu_bn_zero_var", m, keep_bn=False)
    got = {r["node"]: (r["removed"], r["unread"]) for r in insp["pruning"]}
    check(got.get("/c2/Conv") == (3, 0), "relu_bn_zero_var: the unread channel stays (%s)" % got)
    m = MlpBN()
    randomise_bn(m)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.3, 0.3)
        m.fc1.weight[[3, 17, 30]] = 0
        m.fc1.bias[[3, 17, 30]] = 0
    m.eval()
    insp, _ = run_case(a, "relu_bn1d", m, keep_bn=False)
    got = {r["node"]: (r["dead"], r["removed"], r["folded"]) for r in insp["pruning"]}
    check(got.get("/fc1/Gemm") == (3, 3, 3),
          "relu_bn1d: fc1's 3 dead features go through BatchNorm1d, folded into fc2 (%s)" % got)
    # BatchNorm1d straight after the Linear folds into its Gemm: its zero-scale features are dead
    # (relu(beta) constants, folded into fc2's bias where beta > 0), and no BatchNorm step stays.
    m = MlpSlim()
    randomise_bn(m)
    with torch.no_grad():
        m.bn.weight[[1, 8, 9, 20, 31]] = 0
        m.bn.bias[[1, 8]] = 0.25
        m.bn.bias[[9, 20, 31]] = -0.1
    m.eval()
    insp, _ = run_case(a, "slim_bn1d", m, keep_bn=False)
    got = {r["node"]: (r["dead"], r["removed"]) for r in insp["pruning"]}
    check(got.get("/fc1/Gemm") == (5, 5), "slim_bn1d: fc1's 5 zero-scale features go (%s)" % got)
    ops = [nd["op"] for nd in insp["nodes"]]
    check("BatchNormalization" not in ops, "slim_bn1d: the BatchNorm1d folds into fc1 (steps %s)" % ops)


class OneChannel(nn.Module):
    """conv 1 -> 1 (its one channel dead: weights and bias 0), read by a padded conv 1 -> 8."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.b(F.relu(self.a(x))), 1), 1))


def one_channel_case(a):
    """A layer whose only channel is dead keeps it, and inspect says why (it said nothing)."""
    m = OneChannel()
    with torch.no_grad():
        m.a.weight.zero_()
        m.a.bias.zero_()
    m.eval()
    insp, _ = run_case(a, "one_channel", m, keep_bn=False)
    r = [r for r in insp["pruning"] if r["node"] == "/a/Conv"]
    check(len(r) == 1 and r[0]["removed"] == 0 and "1 stays" in r[0]["kept_reason"],
          "one_channel: the one dead channel stays, with its reason (%s)" % r)


def prelu_concat_case(a):
    """a [2, 5] and b [1, 4] dead (constants 0, -0.3; 0.7, -0.2): all go, folded into c's bias
    as p(v) * s + 0.25 (non-zero for all four: the constants differ per channel through the
    PReLU slopes and s, each read at its offset). Against ORT checks the folded values."""
    torch.manual_seed(13)
    m = PReLUConcat()
    with torch.no_grad():
        m.p.weight.uniform_(0.1, 0.9)
        m.a.weight[[2, 5]] = 0
        m.a.bias[[2, 5]] = torch.tensor([0.0, -0.3])
        m.b.weight[[1, 4]] = 0
        m.b.bias[[1, 4]] = torch.tensor([0.7, -0.2])
    m.eval()
    insp, _ = run_case(a, "prelu_concat", m, keep_bn=False)
    got = {r["node"]: (r["removed"], r["folded"]) for r in insp["pruning"]}
    check(got.get("/a/Conv") == (2, 2) and got.get("/b/Conv") == (2, 2),
          "prelu_concat: (removed, folded) a (2, 2), b (2, 2) behind the Concat (%s)" % got)


class Decoder(nn.Module):
    """A U-Net-style decoder step: conv 3x3 (1 -> 8) and ReLU, max pool, conv 3x3 (8 -> 12) and
    ReLU, ConvTranspose 2x2 stride 2 (12 -> 6) back up, concatenated with the first conv's
    output, conv 1x1 (14 -> 10)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1)
        self.up, self.out = nn.ConvTranspose2d(12, 6, 2, stride=2), nn.Conv2d(14, 10, 1)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(F.max_pool2d(a, 2)))
        return self.out(torch.cat([self.up(b), a], 1))


def decoder_case(a):
    """c2's dead filters [1, 4, 9] (bias 0: relu 0) go from the ConvTranspose's input; [6]
    (bias 0.5: relu 0.5, spread unevenly by the transposed conv) stays, and inspect says why.
    c2's live channel 2, whose ConvTranspose weights are all zero, goes as unread. Dense MACs
    still count the ConvTranspose's 12 inputs."""
    torch.manual_seed(14)
    m = Decoder()
    with torch.no_grad():
        m.c2.weight[[1, 4, 6, 9]] = 0
        m.c2.bias[[1, 4, 6, 9]] = torch.tensor([0, 0, 0.5, 0])
        m.up.weight[2] = 0
    m.eval()
    insp, st = run_case(a, "decoder", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    r = got.get("/c2/Conv", {})
    check(r.get("removed") == 4 and r.get("unread") == 1 and "ConvTranspose" in r.get("kept_reason", ""),
          "decoder: 3 of c2's 4 dead channels and 1 unread go from the ConvTranspose's input, the 0.5 stays (%s)" % r)
    up = [n for n in insp["nodes"] if n["op"] == "ConvTranspose"]
    hw = 14 * 14  # the ConvTranspose's input map
    check(len(up) == 1 and up[0]["dense_macs"] == 12 * 6 * 4 * hw and up[0]["executed_macs"] == 8 * 6 * 4 * hw,
          "decoder: ConvTranspose MACs %s executed of %s dense, expected %d of %d" % (
              up[0]["executed_macs"] if up else None, up[0]["dense_macs"] if up else None, 8 * 6 * 4 * hw,
              12 * 6 * 4 * hw))


class SENet(nn.Module):
    """Squeeze-and-excitation blocks as torchvision writes them (SqueezeExcitation: GAP, 1x1
    conv, ReLU, 1x1 conv, Sigmoid, x * s) and as MobileNetV3 does (Hardsigmoid), each after a
    conv + BN + ReLU: c1 (1 -> 8) -> SE -> c2 3x3 pad 1 (8 -> 12) -> SE (hardsigmoid) -> c3 1x1
    (12 -> 6) -> GAP -> FC."""

    def __init__(self, gate2=nn.Hardsigmoid):
        super().__init__()
        from torchvision.ops import SqueezeExcitation
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.se1 = SqueezeExcitation(8, 4)
        self.se2 = SqueezeExcitation(12, 4, scale_activation=gate2)
        self.c3, self.fc = nn.Conv2d(12, 6, 1), nn.Linear(6, 10)

    def forward(self, x):
        x = self.se1(F.relu(self.b1(self.c1(x))))
        x = self.se2(F.relu(self.b2(self.c2(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c3(x), 1), 1))

    @staticmethod
    def macs(k1, k2, hw=28):
        # convs on the map, the SE blocks' 1x1 convs on [N, C, 1, 1], the head
        return (9 * k1 + 9 * k1 * k2 + k2 * 6) * hw * hw + 2 * 4 * (k1 + k2) + 60


def se_case(a, gate2=nn.Hardsigmoid, name="se"):
    """b1's channels [1, 5] (scale and shift 0: relu 0) go, with se1's fc1 inputs and fc2
    outputs; [3] (shift 0.4: relu 0.4, then times a scale that varies per input) stays, and
    inspect says why. b2's [0, 7, 11] (0) go through the second SE (a Hardsigmoid gate, or a
    Clip(0, 1) that becomes its fc2's epilogue) into the 1x1 c3."""
    torch.manual_seed(15)
    m = SENet(gate2)
    randomise_bn(m)
    with torch.no_grad():
        m.b1.weight[[1, 3, 5]] = 0
        m.b1.bias[[1, 3, 5]] = torch.tensor([0, 0.4, 0])
        m.b2.weight[[0, 7, 11]] = 0
        m.b2.bias[[0, 7, 11]] = 0
    m.eval()
    insp, st = run_case(a, name, m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    have = [(got[n]["removed"], got[n]["dead"]) if n in got else None for n in ("/c1/Conv", "/c2/Conv")]
    check(have == [(2, 3), (3, 3)], "%s: (removed, dead) for c1, c2 %s, expected [(2, 3), (3, 3)]" % (name, have))
    check("squeeze-and-excitation" in got.get("/c1/Conv", {}).get("kept_reason", ""),
          "%s: the 0.4 channel, scaled at run time, stays, and inspect says why (%s)" % (name, got.get("/c1/Conv")))
    check(st["dense_macs"] == 3 * SENet.macs(8, 12) and st["executed_macs"] == 3 * SENet.macs(6, 9),
          "%s: dense MACs %d = model's %d, executed %d = compacted network's %d" % (
              name, st["dense_macs"], 3 * SENet.macs(8, 12), st["executed_macs"], 3 * SENet.macs(6, 9)))


class FlatHead(nn.Module):
    """conv 1->8 3x3 pad 1, ReLU, maxpool 2, conv 8->12 3x3 pad 1, ReLU, flatten (or, with
    view, x.view(x.size(0), -1): Shape, Gather, Concat and a Reshape), Linear(12*14*14, 10)."""

    def __init__(self, view=False):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12 * 14 * 14, 10)
        self.view = view

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        return self.fc(x.view(x.size(0), -1) if self.view else torch.flatten(x, 1))

    @staticmethod
    def macs(k1, k2):
        return 9 * k1 * 28 * 28 + 9 * k1 * k2 * 14 * 14 + k2 * 196 * 10


class MeanHead(nn.Module):
    """conv 1->8 3x3 pad 1, ReLU, x.mean((2, 3)), Linear(8, 10)."""

    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.c(x)).mean((2, 3)))


def heads_case(a):
    """FlatHead: c1 [2] (bias 0) goes though c2 pads; c2 [1, 5] (bias 0) go, [7] (bias 0.3,
    relu 0.3 in 196 columns of the Linear) goes, folded. MeanHead: c [0] bias 0 and [3] bias
    0.5 go, the 0.5 folded."""
    for name, view in (("flat_head", False), ("flat_head_view", True)):
        torch.manual_seed(10)
        m = FlatHead(view)
        with torch.no_grad():
            m.c1.weight[[2]] = 0
            m.c1.bias[[2]] = 0
            m.c2.weight[[1, 5, 7]] = 0
            m.c2.bias[[1, 5, 7]] = torch.tensor([0.0, 0.0, 0.3])
        m.eval()
        insp, st = run_case(a, name, m, keep_bn=False)
        got = {r["node"]: (r["removed"], r["folded"]) for r in insp["pruning"]}
        check(got.get("/c1/Conv") == (1, 0) and got.get("/c2/Conv") == (3, 1),
              "%s: (removed, folded) c1 %s, c2 %s; expected (1, 0), (3, 1)" % (name, got.get("/c1/Conv"), got.get("/c2/Conv")))
        check(st["executed_macs"] == 3 * FlatHead.macs(7, 9),
              "%s: executed MACs %d = the compacted net's %d" % (name, st["executed_macs"], 3 * FlatHead.macs(7, 9)))
    torch.manual_seed(11)
    m = MeanHead()
    with torch.no_grad():
        m.c.weight[[0, 3]] = 0
        m.c.bias[[0, 3]] = torch.tensor([0.0, 0.5])
    m.eval()
    insp, st = run_case(a, "mean_head", m, keep_bn=False)
    got = {r["node"]: (r["removed"], r["folded"]) for r in insp["pruning"]}
    check(got.get("/c/Conv") == (2, 1), "mean_head: (removed, folded) %s, expected (2, 1)" % (got.get("/c/Conv"),))


class UnreadAfter(nn.Module):
    """conv 1->6 3x3 pad 1, then `act`, then conv 6->4 1x1 whose weights for channel 2 are 0."""

    def __init__(self, act):
        super().__init__()
        self.c1, self.c2, self.act = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 4, 1), act
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.c2(self.act(self.c1(x))), 1), 1))


class ScaleBy(nn.Module):
    """x * s, or PReLU with slopes s (s one value per channel)."""

    def __init__(self, s, prelu=False):
        super().__init__()
        self.prelu = prelu
        self.register_buffer("s", s.view(1, -1, 1, 1))

    def forward(self, x):
        return F.prelu(x, self.s.flatten()) if self.prelu else x * self.s


def unread_case(a):
    """Channel 2 of c1 is read by nobody (zero weights in c2): it goes after a Relu, or a
    per-channel scale or PReLU with finite values, but not after an Exp or a Reciprocal, which
    could make it inf, nor after a scale of inf or a PReLU slope of NaN at that channel, nor
    when c1's own filter for it holds an inf: 0 * inf is NaN in the dense model (reviewers'
    finds: the NaN became a finite answer)."""
    finite = torch.linspace(0.5, 2.0, 6)
    inf, nan = finite.clone(), finite.clone()
    inf[2], nan[2] = float("inf"), float("nan")
    for name, act, want in (("unread_relu", nn.ReLU(), 1), ("unread_exp", torch.exp, 0),
                            ("unread_reciprocal", lambda x: torch.reciprocal(F.relu(x)), 0),
                            ("unread_scale", ScaleBy(finite), 1), ("unread_scale_inf", ScaleBy(inf), 0),
                            ("unread_prelu", ScaleBy(finite, True), 1), ("unread_prelu_nan", ScaleBy(nan, True), 0),
                            ("unread_inf_filter", nn.ReLU(), 0)):
        torch.manual_seed(12)
        m = UnreadAfter(act)
        with torch.no_grad():
            m.c2.weight[:, 2] = 0
            if name == "unread_inf_filter":  # c1's channel 2 is inf at run time: 0 * inf is NaN (a reviewer's find)
                m.c1.weight[2, 0, 1, 1] = float("inf")
        m.eval()
        insp, _ = run_case(a, name, m, keep_bn=False)
        got = {r["node"]: r for r in insp["pruning"]}.get("/c1/Conv", {})
        check(got.get("unread", 0) == want and got.get("removed", 0) == want,
              "%s: %d unread channel removed, expected %d (%s)" % (name, got.get("unread", 0), want, got))


class InfReader(nn.Module):
    """conv 1->6 3x3 pad 1 (channel 2 dead: zero filter and bias), ReLU, then a reader whose
    weights for channel 2 hold an inf: a 1x1 conv (`conv`), a depthwise 3x3 (inf centre tap;
    no ReLU after it, which fused would map the NaN to 0), or the FC after GAP (`gemm`)."""

    def __init__(self, reader):
        super().__init__()
        self.reader = reader
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.c2 = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(6 if reader == "gemm" else 4, 10)
        with torch.no_grad():
            self.c1.weight[2] = 0
            self.c1.bias[2] = 0
            if reader == "conv":
                self.c2.weight[1, 2] = float("inf")
            elif reader == "depthwise":
                self.dw.weight[2, 0, 1, 1] = float("inf")
            else:
                self.fc.weight[3, 2] = float("inf")

    def forward(self, x):
        y = F.relu(self.c1(x))
        if self.reader == "depthwise":
            y = self.c2(self.dw(y))
        elif self.reader == "conv":
            y = self.c2(y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def inf_reader_case(a):
    """A dead channel whose reader has an inf weight for it is kept: 0 * inf is NaN in ONNX
    Runtime's answer, and removing the channel with its weights made it finite (probe's find)."""
    for reader in ("conv", "depthwise", "gemm"):
        m = InfReader(reader).eval()
        name = "inf_reader_" + reader
        insp, _ = run_case(a, name, m, keep_bn=False)
        r = {r["node"]: r for r in insp["pruning"]}.get("/c1/Conv", {})
        # (The depthwise reader stops the per-conv pass as a grouped conv; the pass through
        # depthwise convs keeps the channel without a report.)
        check(r.get("dead") == 1 and all(q["removed"] == 0 for q in insp["pruning"])
              and (reader == "depthwise" or "inf or NaN" in r.get("kept_reason", "")),
              "%s: the dead channel stays, and inspect says it is for the inf weight (%s)" % (name, insp["pruning"]))
        for t in ("1", "2"):
            y, ref, _ = run_vs_ort(a, os.path.join(a.work_dir, name + ".onnx"), np.ones((1, 1, 28, 28), np.float32),
                                   "%s_t%s" % (name, t), "-t", t)
            check(bool(np.isnan(ref).any()) and bool(np.isnan(y).any()),
                  "%s -t %s: ONNX Runtime's NaN is Sluice's too" % (name, t))


class Mlp(nn.Module):
    """conv 1->4 3x3 stride 2, ReLU, flatten (784), fc1 784->64, ReLU, fc2 64->32, Tanh, fc3 32->10."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 64), nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = torch.flatten(F.relu(self.c(x)), 1)
        return self.fc3(torch.tanh(self.fc2(F.relu(self.fc1(x)))))

    @staticmethod
    def macs(f1, f2):
        return 4 * 9 * 14 * 14 + 784 * f1 + f1 * f2 + f2 * 10


def mlp_case(a):
    """fc1: 13 rows zeroed by ln_structured; 5 of them get bias 0 (removed), 8 bias 0.3
    (relu(0.3) folded into fc2's bias). fc2: rows 3, 7 zeroed, bias -0.2 (tanh(-0.2) folded into
    fc3), and input 11 of fc3 zeroed, so fc2's feature 11 is unread. fc2's Gemm is rewritten
    to transB = 0 in the file."""
    import onnx
    from onnx import numpy_helper
    torch.manual_seed(14)
    m = Mlp()
    tprune.ln_structured(m.fc1, "weight", amount=13, n=1, dim=0)
    tprune.remove(m.fc1, "weight")
    with torch.no_grad():
        dead = (m.fc1.weight.abs().sum(1) == 0).nonzero().flatten()
        m.fc1.bias[dead[:5]] = 0
        m.fc1.bias[dead[5:]] = 0.3
        m.fc2.weight[[3, 7]] = 0
        m.fc2.bias[[3, 7]] = -0.2
        m.fc3.weight[:, 11] = 0
    m.eval()
    path = os.path.join(a.work_dir, "mlp.onnx")
    export(m, path, keep_bn=False)
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    check(len(gemms) == 3, "mlp: the three Linears export as Gemm (%d)" % len(gemms))
    fc2 = gemms[1]
    w = inits[fc2.input[1]]
    w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T), w.name))
    for at in fc2.attribute:
        if at.name == "transB":
            at.i = 0
    onnx.save(model, path)
    insp = check_mlp(a, path, "mlp", gemms[0].name, fc2.name)
    check({r["node"]: r["unit"] for r in insp["pruning"]}.get(gemms[0].name) == "features",
          "mlp: inspect reports a Linear's pruning in features")
    feats = {n["name"]: (n.get("dense_out_features"), n.get("out_features")) for n in insp["nodes"] if n["op"] == "Gemm"}
    check(feats.get(gemms[0].name) == (64, 51), "mlp: inspect shows fc1's features 64 -> 51 (%s)" % (feats.get(gemms[0].name),))
    # The same file with every Linear written as MatMul + Add, as other exporters write one (B
    # stored [K, N]): Sluice takes them as Gemms, and the pruning and MACs are the same.
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        if n.op_type != "Gemm":
            nodes.append(n)
            continue
        if any(at.name == "transB" and at.i for at in n.attribute):
            w = inits[n.input[1]]
            w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T), w.name))
        nodes.append(onnx.helper.make_node("MatMul", [n.input[0], n.input[1]], [n.output[0] + "_mm"], name=n.name))
        nodes.append(onnx.helper.make_node("Add", [n.output[0] + "_mm", n.input[2]], [n.output[0]], name=n.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    mpath = os.path.join(a.work_dir, "mlp_matmul.onnx")
    onnx.save(model, mpath)
    check(sum(n.op_type == "MatMul" for n in model.graph.node) == 3 and not any(n.op_type == "Gemm" for n in model.graph.node),
          "mlp_matmul: three MatMul + Add Linears in the file")
    check_mlp(a, mpath, "mlp_matmul", gemms[0].name, fc2.name)


def check_mlp(a, path, tag, fc1, fc2):
    """mlp_case's file at `path` against ORT at batch 1 and 3; fc1 and fc2 (node names) pruned as
    built, and the MACs of the model and of the compacted network. Returns `inspect --json`."""
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x1x28x28").stdout)
    for batch in (1, 3):
        _, _, st = run_vs_ort(a, path, np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32),
                              "%s_batch%d" % (tag, batch))
    got = {r["node"]: (r["removed"], r["folded"], r.get("unread", 0)) for r in insp["pruning"]}
    check(got.get(fc1) == (13, 8, 0) and got.get(fc2) == (3, 2, 1),
          "%s: (removed, folded, unread) fc1 %s, fc2 %s; expected (13, 8, 0), (3, 2, 1)" % (tag, got.get(fc1), got.get(fc2)))
    check(st["dense_macs"] == 3 * Mlp.macs(64, 32) and st["executed_macs"] == 3 * Mlp.macs(51, 29),
          "%s: dense MACs %d = model's %d, executed %d = compacted network's %d" % (
              tag, st["dense_macs"], 3 * Mlp.macs(64, 32), st["executed_macs"], 3 * Mlp.macs(51, 29)))
    return insp

def committed_models(a):
    """models/slim: trained network-slimming models (models/train_slimming.py) on real test
    images; the MACs left after removing the pruned channels equal what the training script
    computed from its own masks (models/slim/pruning.json)."""
    sys.path.insert(0, os.path.join(REPO, "models"))
    import fashion_mnist
    x = fashion_mnist.load("test")[0][:16]
    info = json.load(open(os.path.join(REPO, "models", "slim", "pruning.json")))
    for path in sorted(glob.glob(os.path.join(REPO, "models", "slim", "*.onnx"))):
        name = os.path.basename(path)
        # With the default options (not the wrappers' --sparse off, which also changes how plain
        # convs behind a gate are rewritten): trained weights, no layer half zero.
        _, _, st = e2e_util.run_vs_ort(a, path, x, name)
        insp = json.loads(e2e_util.run_sluice(a, "inspect", path, "--json", "--shape", "image=1x1x28x28").stdout)
        check(insp["channels_removed"] > 0 or insp["gates_recognised"] > 0,
              "%s: %d channels removed, %d gates recognised" % (name, insp["channels_removed"], insp["gates_recognised"]))
        if name == "mcifar_fbs_slim_d50.onnx":
            # FBS + slimming: the stem's zeroed filters (bias 0) feed the first gated conv; they go
            # from the stem and from that gated conv's conv and saliency inputs.
            import onnx
            from onnx import numpy_helper
            model = onnx.load(path)
            inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
            stem = next(n for n in model.graph.node if n.op_type == "Conv")
            w, b = inits[stem.input[1]], inits[stem.input[2]]
            zeroed = int(sum(1 for o in range(w.shape[0]) if not w[o].any() and b[o] == 0))
            got = {r["node"]: r["removed"] for r in insp["pruning"]}
            check(zeroed > 0 and got.get(stem.name) == zeroed and insp["gates_recognised"] == 7,
                  "%s: the stem's %d zeroed filters removed (%s) with all 7 gates still taken" % (name, zeroed, got.get(stem.name)))
            check(st["dense_macs"] == 16 * info["p50"]["macs"]["dense"] and st["executed_macs"] < st["dense_macs"],
                  "%s: dense MACs %d are the model's (%d); executed %d" % (name, st["dense_macs"], 16 * info["p50"]["macs"]["dense"],
                                                                          st["executed_macs"]))
        for key in ("p50", "p70"):
            if name in ("mcifar_slim_%s.onnx" % key, "mcifar_slim_%s_unfolded.onnx" % key):
                want = info[key]["macs"]["pruned_channels_removed"]
                check(insp["static_macs"] == want and st["executed_macs"] == 16 * want,
                      "%s: MACs after pruning %d = the training script's count %d" % (name, insp["static_macs"], want))


class ThinResNet(nn.Module):
    """torchvision's ResNet stem and basic blocks at 32 and 64 channels, one block per stage."""

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (self.down(x) if self.down is not None else x))

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 32, 7, 2, 3, bias=False), nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.l1 = nn.Sequential(self.Basic(32, 32, 1), self.Basic(32, 32, 1))
        self.l2 = nn.Sequential(self.Basic(32, 64, 2), self.Basic(64, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.l2(self.l1(x)), 1), 1))


def resident_case(a):
    torch.manual_seed(8)
    m = ThinResNet()
    randomise_bn(m)
    with torch.no_grad():
        # Network slimming per dependency group: the stem's stream (stem, every l1 block's second
        # BN), l2's stream (downsample and second BNs), and each block's inner BN.
        for bns, c, keep in (([m.bn] + [b.b2 for b in m.l1], 32, 20),
                             ([m.l2[0].down[1]] + [b.b2 for b in m.l2], 64, 39),
                             ([m.l1[0].b1], 32, 20), ([m.l1[1].b1], 32, 20), ([m.l2[0].b1], 64, 39), ([m.l2[1].b1], 64, 39)):
            dead = torch.randperm(c)[:c - keep]
            for bn in bns:
                bn.weight[dead] = 0
                bn.bias[dead] = 0
    m.eval()
    path = os.path.join(a.work_dir, "resident.onnx")
    torch.onnx.export(m, torch.randn(1, 3, 96, 96), path, opset_version=13, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    x = np.random.default_rng(3).standard_normal((2, 3, 96, 96)).astype(np.float32)
    kept = []
    for planes in ("resident", "nhwc"):
        for t in ("1", "2"):
            insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=2x3x96x96", "--planes", planes,
                                         "-t", t).stdout)
            n = sum(1 for nd in insp["nodes"] for o in nd["outputs"] if o.get("layout") == "planar")
            if planes == "nhwc":
                check(n == 0, "resident: --planes nhwc keeps no value planar (%d on %s threads)" % (n, t))
            else:
                kept.append(n)
            run_vs_ort(a, path, x, "resident_%s_t%s" % (planes, t), "--planes", planes, "-t", t)
    print("resident: values kept in resident planes on 1 and 2 threads: %s (the kernel choice is measured)" % kept)


def main():
    a = parse_args(__doc__)
    torch.set_num_threads(1)
    for kind in ("slim", "slim_bn", "slim_beta", "ln", "ln_in", "mask", "where", "where_full", "frozen", "lowered",
                 "alldead"):
        m, removed = plain_case(kind)
        # alldead: the channel that stays has only zero weights, which the sparse kernel (when
        # it measures faster) counts as 0 MACs: dense kernels only, for fixed counts
        insp, st = run_case(a, kind, m, keep_bn=(kind == "slim_bn"),
                            extra=("--sparse", "off") if kind == "alldead" else ())
        got = {r["node"]: r["removed"] for r in insp["pruning"]}
        names = ["/convs.%d/Conv" % i for i in range(4)]
        check([got.get(n, 0) for n in names] == removed,
              "%s: channels removed per conv %s, expected %s" % (kind, [got.get(n, 0) for n in names], removed))
        keep = [o - r for (_, o, _, _), r in zip(Plain.SPEC, removed)]
        dense = Plain().macs([o for _, o, _, _ in Plain.SPEC])
        check(st["dense_macs"] == 3 * dense and st["executed_macs"] == 3 * m.macs(keep),
              "%s: dense MACs %d = model's %d, executed %d = compacted network's %d" % (
                  kind, st["dense_macs"], 3 * dense, st["executed_macs"], 3 * m.macs(keep)))
        if kind == "mask":
            muls = [n["name"] for n in insp["nodes"] if n["op"] == "Mul"]
            check(len(muls) == 1, "mask: the three 0/1 masks fold into their convs, the one with a -1 stays (%s)" % muls)
        if kind == "alldead":
            r = [r for r in insp["pruning"] if r["node"] == "/convs.1/Conv"]
            check(r and "1 stays" in r[0]["kept_reason"], "alldead: inspect says why one channel stays (%s)" % r)
        if kind == "where_full":
            left = [n["op"] for n in insp["nodes"] if n["op"] in ("Mul", "Where")]
            check(not left, "where_full: the full-size masks fold into their convs (left: %s)" % left)
        if kind in ("frozen", "lowered"):
            left = [n["op"] for n in insp["nodes"] if n["op"] in ("Mul", "Add", "Sub")]
            check(not left, "%s: the lowered BN's Mul, Add (and Sub) fold into the convs (left: %s)" % (kind, left))
        if kind == "slim_beta":
            kept = [r for r in insp["pruning"] if r["dead"] > r["removed"]]
            check(kept and all("padding" in r["kept_reason"] for r in kept),
                  "slim_beta: non-zero constants read through padding are kept, and inspect says why")
            check(any(r["folded"] > 0 for r in insp["pruning"]),
                  "slim_beta: non-zero constants read without padding are folded into the reader's bias")
    committed_models(a)
    inf_reader_case(a)
    concat_case(a)
    concat_residual_case(a)
    preact_case(a)
    spp_case(a)
    copy_path_case(a)
    avg_pool_case(a)
    activations_case(a)
    prelu_case(a)
    prelu_concat_case(a)
    one_channel_case(a)
    relu_bn_case(a)
    decoder_case(a)
    se_case(a)
    se_case(a, functools.partial(nn.Hardtanh, 0.0, 1.0), "se_clip")  # Clip(0, 1): fc2's epilogue
    heads_case(a)
    mask_after_activation_case(a)
    depthwise_own_zeros_case(a)
    unread_case(a)
    mlp_case(a)
    mobilenet_case(a)
    grouped_case(a)  # a ResNeXt-style grouped conv slimmed on both sides
    mobilenet_case(a, nn.Hardswish, "mobilenet_hardswish")  # x * HardSigmoid(x) at opset 13
    resident_case(a)
    m, expected = residual_case()
    insp, st = run_case(a, "residual", m, keep_bn=False)
    got = {r["node"]: r for r in insp["pruning"]}
    check({n: got[n]["removed"] if n in got else -1 for n in expected} == expected,
          "residual: removed %s, expected %s" % ({n: got[n]["removed"] if n in got else -1 for n in expected}, expected))
    check(all("Add" in got[n]["kept_reason"] for n, v in expected.items() if v == 0 and n in got),
          "residual: channels meeting the residual Add are kept, and inspect says so")
    check(st["executed_macs"] < st["dense_macs"], "residual: fewer MACs run than dense")

    # The same channels dead along the whole residual stream (stem and both blocks' second
    # BN): the group loses them, and so do its readers (the blocks' first convs, the FC).
    torch.manual_seed(5)
    m = Residual()
    randomise_bn(m)
    stream = torch.tensor([1, 4, 7, 9, 12])
    with torch.no_grad():
        for bn in (m.bn, m.blocks[0].b2, m.blocks[1].b2):
            bn.weight[stream] = 0
            bn.bias[stream] = 0
    m.eval()
    insp, st = run_case(a, "residual_group", m, keep_bn=False)
    groups = [r for r in insp["pruning"] if r["node"].startswith("residual group")]
    check(len(groups) == 1 and groups[0]["removed"] == 5 and groups[0]["channels"] == 16,
          "residual_group: one residual group, 5 of 16 channels removed: %s" % groups)
    shapes = {n["name"]: n["outputs"][0]["shape"][1] for n in insp["nodes"] if n["op"] == "Conv"}
    check(shapes.get("/stem/Conv") == 11 and shapes.get("/blocks/blocks.1/c2/Conv") == 11,
          "residual_group: the stream is 11 channels wide after pruning (%s)" % shapes)
    # executed MACs: stem 1->11 3x3, c1 11->16 3x3, c2 16->11 3x3 (x2 blocks), fc 11->10; 28x28
    px = 28 * 28
    want = 3 * (11 * 1 * 9 * px + 2 * (16 * 11 * 9 * px + 11 * 16 * 9 * px) + 11 * 10)
    check(st["executed_macs"] == want, "residual_group: executed MACs %d = the compacted net's %d" % (st["executed_macs"], want))

    # A residual whose branch conv reads the stream itself, y + bn(c1(y)) (a reviewer's model:
    # c1 was both a writer into the group and a reader of it, its input channels were never
    # compacted, and loading failed in oneDNN). Channels 2 and 3 dead in the stem and c1.
    torch.manual_seed(6)
    m = SelfResidual()
    randomise_bn(m)
    with torch.no_grad():
        for conv in (m.stem, m.c1):
            conv.weight[[2, 3]] = 0
        m.stem.bias[[2, 3]] = 0
        m.bn.weight[[2, 3]] = 0
        m.bn.bias[[2, 3]] = 0
    m.eval()
    insp, st = run_case(a, "self_residual", m, keep_bn=False)
    groups = [r for r in insp["pruning"] if r["node"].startswith("residual group")]
    check(len(groups) == 1 and groups[0]["removed"] == 2, "self_residual: the group loses channels 2 and 3: %s" % groups)
    want = 3 * ((1 * 14 * 9 + 14 * 14 * 9 + 14 * 8) * px + 8 * 10)
    check(st["executed_macs"] == want, "self_residual: executed MACs %d = the compacted net's %d" % (st["executed_macs"], want))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
