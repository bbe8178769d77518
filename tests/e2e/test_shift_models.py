#!/usr/bin/env python3
"""Shift layers (design.md §8) checked live against ONNX Runtime on the same files: a
ShiftResNet (models/shift.py, random seeded weights) in both export forms (one-hot depthwise
conv; Slice/Pad/Slice/Concat), the same idea in other op patterns (a full, grouped or dilated
one-hot conv; a Pad that pads one side and crops the other), and look-alikes that must not be
taken for shifts (torch.roll, a sum of two shifted channels, a pad/crop that zeroes a column,
a one-hot conv that moves nothing).
Asserts the outputs, the number of shifts recognised and fused into their 1x1 conv, the MACs (a
shift runs none), and that look-alikes are left alone.

    .venv/bin/python tests/e2e/test_shift_models.py --sluice build/sluice --work-dir build/e2e_shift
"""
import json
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "models"))
from e2e_util import check, finish, parse_args, run_sluice, run_vs_ort  # noqa: E402
import shift  # noqa: E402


class OneHotDW(nn.Module):
    """Depthwise 3x3 conv with fixed kernels; value/hot/bias make it a shift or a look-alike.
    value: the hot tap's value, one for all channels or a list (a BatchNorm folded into it)."""

    def __init__(self, c, value=1.0, two_hot=False, bias=0.0):
        super().__init__()
        w = torch.zeros(c, 1, 3, 3)
        for ch in range(c):
            w[ch, 0, ch % 3, (ch // 3) % 3] = value[ch] if isinstance(value, list) else value
            if two_hot:
                w[ch, 0, 1, 1] += 1.0
        self.register_buffer("w", w)
        self.register_buffer("b", torch.full((c,), bias))

    def forward(self, x):
        return F.conv2d(x, self.w, self.b, padding=1, groups=x.shape[1])


class SliceConcat(nn.Module):
    """Channel groups through Slice/Pad; `kind` picks a true shift or a look-alike."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        a, b = x[:, :4], x[:, 4:]
        h = x.shape[2]
        if self.kind == "shift":  # b moved up one row: b[y + 1], zero at the bottom
            b = F.pad(b[:, :, 1:], (0, 0, 0, 1))
        elif self.kind == "crop_then_pad_top":  # row 0 zeroed, the rest unmoved: not a translation
            b = F.pad(b[:, :, 1:], (0, 0, 1, 0))
        elif self.kind == "permute":  # channels reordered, nothing moved
            a, b = b, a
        return torch.cat([a, b[:, :, :h]], 1)


class CatZeros(nn.Module):
    """Channel groups moved by concatenating zero blocks on H or W, as torch.cat([zeros,
    x[..., :-1]], 3) writes a shift; `kind` "ones" pads with ones instead (a look-alike)."""

    def __init__(self, kind="shift"):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        n, _, h, w = x.shape
        fill = torch.ones if self.kind == "ones" else torch.zeros
        a, b, c = x[:, :3], x[:, 3:6], x[:, 6:]
        b = torch.cat([fill(n, 3, h, 1), b[:, :, :, :-1]], 3)  # right by one column
        c = torch.cat([c[:, :, 1:], fill(n, 2, 1, w)], 2)      # up by one row
        return torch.cat([a, b, c], 1)


class OneHotConv(nn.Module):
    """A conv whose output channel o copies one input channel (pick(o)) at one tap: a shift that
    other exporters write as a full, grouped or dilated conv rather than a depthwise one."""

    def __init__(self, c, groups=1, mult=1, dilation=1, pick=None, two_inputs=False, centre=False, stride=1, pad=None):
        super().__init__()
        m, cg = c * mult, c // groups
        w = torch.zeros(m, cg, 3, 3)
        for o in range(m):
            w[o, pick(o) if pick else o % cg, 1 if centre else o % 3, 1 if centre else (o // 3) % 3] = 1.0
            if two_inputs:  # a second input channel added in: a sum of shifts, not a shift
                w[o, (o + 1) % cg, 1, 1] = 1.0
        self.register_buffer("w", w)
        self.groups, self.dilation, self.stride = groups, dilation, stride
        self.pad = dilation if pad is None else pad

    def forward(self, x):
        return F.conv2d(x, self.w, None, stride=self.stride, padding=self.pad, dilation=self.dilation, groups=self.groups)


class PadCrop(nn.Module):
    """Half the channels through one Pad that pads one side and crops the other (negative pad),
    or through a Slice and such a Pad that together zero an in-bounds column (a look-alike)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        a, b = x[:, :4], x[:, 4:]
        if self.kind == "shift":  # b moved right one column: pad 1 left, crop 1 right
            b = F.pad(b, (1, -1, 0, 0))
        else:  # column 0 dropped, then pad 2 left / crop 1 right: column 1 reads a dropped x column
            b = F.pad(b[:, :, :, 1:], (2, -1, 0, 0))
        return torch.cat([a, b], 1)


class Roll(nn.Module):
    """torch.roll wraps around: a translation, but not a zero-filled shift."""

    def forward(self, x):
        return torch.cat([x[:, :4], torch.roll(x[:, 4:], 1, 3)], 1)


OFFSETS = ((0, 0), (0, 1), (1, 0), (-1, -1))  # (dy, dx) of 4 channel pairs: out[y, x] = in[y + dy, x + dx]


def _rows(d, n):
    """Destination and source slices of a move by d along an axis of length n."""
    return slice(max(-d, 0), n + min(-d, 0)), slice(max(d, 0), n + min(d, 0))


class SliceAssign(nn.Module):
    """A shift as slice assignment into a fresh tensor (PyTorch exports ScatterND chains whose
    indices come from Shape/Expand/Where arithmetic). base "zeros" is the shift; "clone" (x
    itself underneath: the edge keeps x unmoved) and "ones" are look-alikes. per_channel
    assigns channel by channel with an integer index (out[:, c, ...] = x[:, c, ...]: Gather
    and Reshape around the ScatterND). skip: a channel pair left unassigned (zeros: still a
    shift, those channels read nothing)."""

    def __init__(self, base="zeros", per_channel=False, skip=None):
        super().__init__()
        self.base, self.per_channel, self.skip = base, per_channel, skip

    def forward(self, x):
        out = {"zeros": torch.zeros_like, "ones": torch.ones_like, "clone": torch.clone}[self.base](x)
        h, w = x.shape[2], x.shape[3]
        for i, (dy, dx) in enumerate(OFFSETS):
            if i == self.skip:
                continue
            (yd, ys), (xd, xs) = _rows(dy, h), _rows(dx, w)
            if self.per_channel:
                for c in (2 * i, 2 * i + 1):
                    out[:, c, yd, xd] = x[:, c, ys, xs]
            else:
                out[:, 2 * i:2 * i + 2, yd, xd] = x[:, 2 * i:2 * i + 2, ys, xs]
        return out


def _wrapped(d, n):
    """The rows that torch.roll by -d (out[y] = in[y + d], wrapping) fills from the other end."""
    return slice(n - d, n) if d > 0 else slice(0, -d)


class RollMasked(nn.Module):
    """torch.roll per channel pair, then the wrapped edge zeroed: by a 0/1 mask ("mul"), by
    Where ("where") or by in-place assignment ("assign"). "wrong_edge" zeroes the edge opposite
    the wrapped one: a look-alike."""

    def __init__(self, how, c=8, hw=12):
        super().__init__()
        self.how = how
        m = torch.ones(1, c, hw, hw)
        for i, (dy, dx) in enumerate(OFFSETS):
            sign = -1 if how == "wrong_edge" else 1
            ch = slice(2 * i, 2 * i + 2)
            if dy:
                m[:, ch, _wrapped(sign * dy, hw)] = 0
            if dx:
                m[:, ch, :, _wrapped(sign * dx, hw)] = 0
        self.register_buffer("mask", m)

    def forward(self, x):
        parts = []
        h, w = x.shape[2], x.shape[3]
        for i, (dy, dx) in enumerate(OFFSETS):
            p = torch.roll(x[:, 2 * i:2 * i + 2], shifts=(-dy, -dx), dims=(2, 3))
            if self.how == "assign":
                p = p.clone()
                if dy:
                    p[:, :, _wrapped(dy, h)] = 0
                if dx:
                    p[:, :, :, _wrapped(dx, w)] = 0
            parts.append(p)
        y = torch.cat(parts, 1)
        if self.how == "where":
            return torch.where(self.mask > 0, y, torch.zeros(()))
        return y if self.how == "assign" else y * self.mask


def wrap(m, c, out=None):
    """1x1 conv -> m -> 1x1 conv, so the shift (if any) has a conv to fuse into."""
    return nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), m, nn.Conv2d(out or c, 5, 1))


def export(m, path, c=8, hw=12):
    torch.onnx.export(m.eval(), torch.randn(1, c, hw, hw), path, opset_version=13, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})


def compare(a, path, shape, name):
    _, ref, st = run_vs_ort(a, path, np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)
    check(float(np.abs(ref[0] - ref[1]).max()) > 1e-6, "%s: output depends on the input" % name)
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x%dx%dx%d" % shape[1:]).stdout)
    return insp, st


class DeadBeforeShift(nn.Module):
    """1x1 conv 8->8 with filters 1, 3, 5 zero and bias `const` there, ReLU, a shift (one-hot
    depthwise conv, or slices), 1x1 conv 8->5."""

    def __init__(self, const, shift_mod):
        super().__init__()
        self.c0, self.sh, self.c1 = nn.Conv2d(8, 8, 1), shift_mod, nn.Conv2d(8, 5, 1)
        with torch.no_grad():
            self.c0.weight[[1, 3, 5]] = 0
            self.c0.bias[[1, 3, 5]] = const

    def forward(self, x):
        return self.c1(self.sh(F.relu(self.c0(x))))


class ChannelLastShift(nn.Module):
    """A shift on a channel-last input [N, H, W, C] (tf2onnx's Keras form): 4 channel pairs moved
    by OFFSETS with zero fill, concatenated on the last axis, then to NCHW for a 1x1 conv."""

    def __init__(self, fill=0.0):
        super().__init__()
        self.conv, self.fill = nn.Conv2d(8, 5, 1), fill

    def forward(self, x):
        parts = []
        for k, (dy, dx) in enumerate(OFFSETS):
            p = x[..., 2 * k:2 * k + 2]
            if dy or dx:  # out[y, x] = in[y + dy, x + dx]: pad the far side, crop the near one
                p = F.pad(p, (0, 0, max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)), value=self.fill)
                p = p[:, max(dy, 0):max(dy, 0) + x.shape[1], max(dx, 0):max(dx, 0) + x.shape[2], :]
            parts.append(p)
        return self.conv(torch.cat(parts, 3).permute(0, 3, 1, 2))


def channel_last_input_shift(a):
    """The shift on an NHWC model input is found (read through a Transpose to NCHW) and fused into
    the 1x1 conv; with a fill of 0.5 it is no shift. Against ORT either way."""
    for fill, want in ((0.0, 1), (0.5, 0)):
        name = "channel_last_shift_fill%g" % fill
        path = os.path.join(a.work_dir, name + ".onnx")
        torch.onnx.export(ChannelLastShift(fill).eval(), torch.randn(1, 12, 12, 8), path, opset_version=13,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
        insp, _ = compare(a, path, (2, 12, 12, 8), name)
        fused = sum("fused_shift" in n for n in insp["nodes"])
        check(insp["shifts_recognised"] == want and fused == want,
              "%s: %d shift(s) recognised and %d fused, expected %d" % (name, insp["shifts_recognised"], fused, want))


class SliceThenPad(nn.Module):
    """The whole map shifted left by one column as x[..., 1:] padded on the right, no Concat, then a
    1x1 conv (the Pad was folded into the conv's padding, leaving the Slice on the reference kernels)."""

    def __init__(self):
        super().__init__()
        self.pre, self.conv = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 6, 1)

    def forward(self, x):
        return self.conv(F.pad(self.pre(x)[..., 1:], (0, 1)))


def slice_then_pad_shift(a):
    """Slice then Pad back to the map's size is a shift, fused into the 1x1 conv; ORT agrees."""
    torch.manual_seed(6)
    path = os.path.join(a.work_dir, "slice_then_pad.onnx")
    export(SliceThenPad(), path, c=4)
    insp, _ = compare(a, path, (2, 4, 12, 12), "slice_then_pad")
    fused = sum("fused_shift" in n for n in insp["nodes"])
    check(insp["shifts_recognised"] == 1 and fused == 1,
          "slice_then_pad: %d shift(s) recognised and %d fused, expected 1 and 1" % (insp["shifts_recognised"], fused))


def dead_channels_through_shifts(a):
    """Zero channels stay zero through a shift (its border is zero too): they go from the conv
    before it and from the 1x1 conv the shift is fused into. A non-zero constant channel gets a
    zero border from the shift: it stays, and inspect says why."""
    for name, const, mod, want in (("dead_zero_dw", 0.0, OneHotDW(8), 3), ("dead_zero_slices", 0.0, SliceConcat("shift"), 3),
                                   ("dead_const_dw", 0.7, OneHotDW(8), 0)):
        torch.manual_seed(5)
        path = os.path.join(a.work_dir, name + ".onnx")
        export(DeadBeforeShift(const, mod), path)
        insp, _ = compare(a, path, (2, 8, 12, 12), name)
        x = np.random.default_rng(1).standard_normal((3, 8, 12, 12)).astype(np.float32)
        for t in ("1", "2"):  # (the fused kernel, offset-read or tiled, is picked by timing)
            run_vs_ort(a, path, x, "%s_t%s" % (name, t), "-t", t)
        got = {r["node"]: r for r in insp["pruning"]}.get("/c0/Conv", {})
        check(got.get("removed", 0) == want and insp["shifts_recognised"] == 1 and
              sum("fused_shift" in n for n in insp["nodes"]) == 1,
              "%s: %d of c0's 3 dead channels removed (expected %d), the shift recognised and fused (%s)" % (
                  name, got.get("removed", 0), want, got))
        if not want:
            check("padding" in got.get("kept_reason", ""), "%s: inspect says why they stay (%s)" % (name, got))


def fold_overflow(a):
    """A one-hot conv scaled by 1e20 before a 1x1 conv with a weight of 1e20: the model computes
    (x 1e20) 1e20, finite for activations of ~1e-3; folded into the reader, 1e40 is inf in float
    and 0 x inf NaN. The scale is not folded then (the one-hot conv runs as written), and the
    output is ORT's. (A probe's case: before the fix 288 of 2016 outputs were inf or NaN.)"""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 18, 1), nn.ReLU(), OneHotDW(18, value=1e20), nn.Conv2d(18, 7, 1))
    with torch.no_grad():
        m[0].weight.mul_(1e-3)
        m[0].bias.mul_(1e-3)
        m[3].weight.zero_()
        m[3].weight[0, 4] = 1e20
        m[3].weight[1, 2] = 1.0
    path = os.path.join(a.work_dir, "fold_overflow.onnx")
    export(m, path, c=4)
    x = np.random.default_rng(1).standard_normal((2, 4, 12, 12)).astype(np.float32)
    for t in ("1", "2"):
        y, ref, _ = run_vs_ort(a, path, x, "fold_overflow_t" + t, "-t", t)
        check(np.isfinite(ref).all() and np.isfinite(y).all() and float(np.abs(ref).max()) > 1e30,
              "fold_overflow -t %s: finite, as ORT (largest %.3g), where the folded weight is inf" % (t, float(np.abs(ref).max())))
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x4x12x12").stdout)
    check(insp["shifts_recognised"] == 0, "fold_overflow: the scale is not folded (%d shifts)" % insp["shifts_recognised"])


class ShiftBnRelu(nn.Module):
    """1x1 conv, ReLU, a one-hot shift conv, BatchNorm, ReLU, 1x1 conv: torch folds the BN into
    the one-hot conv (taps v, bias b), and the ReLU keeps both from the 1x1 conv's weights."""

    def __init__(self, c=18):
        super().__init__()
        self.c0, self.sh, self.bn, self.c1 = nn.Conv2d(4, c, 1), OneHotDW(c), nn.BatchNorm2d(c), nn.Conv2d(c, 7, 1)
        with torch.no_grad():  # a trained BN: scales of both signs, a bias that Relu cuts
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.c1(F.relu(self.bn(self.sh(F.relu(self.c0(x))))))


def shift_and_affine(a):
    """A one-hot conv whose scales and bias cannot go into its readers (here a ReLU reads it)
    stays the depthwise conv it is exported as: oneDNN runs it with the ReLU fused, 4x faster
    than a shift step, a per-channel affine step and a ReLU (tried: 0.60 against 0.13 ms at
    56x56 x 96 channels). Against ORT at -t 1 and -t 2, batch 3, and what inspect shows."""
    torch.manual_seed(3)
    m = ShiftBnRelu()
    path = os.path.join(a.work_dir, "shift_bn_relu.onnx")
    export(m, path, c=4)
    folded = [n for n in onnx.load(path).graph.node if n.op_type == "BatchNormalization"]
    check(not folded, "shift_bn_relu: torch folded the BN into the one-hot conv (%d BN nodes left)" % len(folded))
    x = np.random.default_rng(2).standard_normal((3, 4, 12, 12)).astype(np.float32)
    for t in ("1", "2"):
        run_vs_ort(a, path, x, "shift_bn_relu_t" + t, "-t", t)
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x4x12x12").stdout)
    ops = [n["op"] for n in insp["nodes"]]
    check(insp["shifts_recognised"] == 0 and sum(op == "Conv" for op in ops) == 3,
          "shift_bn_relu: the one-hot conv stays a conv (%s)" % ops)
    # The same with 6 of the first conv's 18 filters zero (a slimmed layer): pruning removes them
    # through the depthwise conv.
    torch.manual_seed(3)
    m = ShiftBnRelu()
    with torch.no_grad():
        m.c0.weight[::3] = 0
        m.c0.bias[::3] = 0
    path = os.path.join(a.work_dir, "shift_bn_relu_dead.onnx")
    export(m, path, c=4)
    for t in ("1", "2"):
        run_vs_ort(a, path, x, "shift_bn_relu_dead_t" + t, "-t", t)
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x4x12x12").stdout)
    removed = sum(r["removed"] for r in insp["pruning"])
    check(removed == 6, "shift_bn_relu_dead: the 6 dead channels removed through the depthwise conv (%d removed)" % removed)
    # A plain shift step (a ReLU reads it, so it is not fused): zero channels go through it; a
    # dead channel of constant 0.7 does not (the shift's border is 0, not 0.7), and inspect says so.
    for name, const, want in (("shift_step_dead_zero", 0.0, 6), ("shift_step_dead_const", 0.7, 0)):
        torch.manual_seed(4)
        m = nn.Sequential(nn.Conv2d(4, 18, 1), nn.ReLU(), OneHotDW(18), nn.ReLU(), nn.Conv2d(18, 7, 1))
        with torch.no_grad():
            m[0].weight[::3] = 0
            m[0].bias[::3] = const
        path = os.path.join(a.work_dir, name + ".onnx")
        export(m, path, c=4)
        for t in ("1", "2"):
            run_vs_ort(a, path, x, "%s_t%s" % (name, t), "-t", t)
        insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x4x12x12").stdout)
        rep = {r["node"]: r for r in insp["pruning"]}.get("/0/Conv", {})
        check(rep.get("removed", -1) == want and insp["shifts_recognised"] == 1,
              "%s: %d of 6 dead channels removed through the shift step (expected %d; %s)" % (
                  name, rep.get("removed", -1), want, rep))
        if not want:
            check("shift" in rep.get("kept_reason", "") or "padding" in rep.get("kept_reason", "") or
                  "constant" in rep.get("kept_reason", ""), "%s: inspect says why they stay (%s)" % (name, rep))


def main():
    a = parse_args(__doc__)
    torch.set_num_threads(1)
    for form in ("conv", "slice", "assign"):
        torch.manual_seed(0)
        m = shift.ShiftResNet(form=form)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
        path = os.path.join(a.work_dir, "shiftresnet_%s.onnx" % form)
        torch.onnx.export(m.eval(), torch.randn(1, 1, 28, 28), path, opset_version=13, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
        insp, st = compare(a, path, (2, 1, 28, 28), "shiftresnet_" + form)
        fused = [n for n in insp["nodes"] if "fused_shift" in n]
        alone = [n for n in insp["nodes"] if n["op"] == "SluiceShift"]
        # 6 shift blocks; the 2 whose 1x1 conv has stride 2 keep the shift as its own step
        check(insp["shifts_recognised"] == 6 and len(fused) == 4 and len(alone) == 2,
              "%s form: 6 shifts recognised (%d), 4 fused into their 1x1 conv (%d), 2 alone (%d)" % (
                  form, insp["shifts_recognised"], len(fused), len(alone)))
        check(all("stride 2x2" in n["kernel"] for n in alone),
              "%s form: the 2 shifts before a stride-2 1x1 conv subsample themselves (%s)" % (form, [n["kernel"] for n in alone]))
        shift_macs = sum(9 * c * hw * hw for c, hw in ((48, 28), (48, 28), (48, 28), (96, 14), (96, 14), (192, 7)))
        if form == "conv":  # the one-hot depthwise convs count as dense MACs, and run none
            check(st["dense_macs"] - st["executed_macs"] == 2 * shift_macs,
                  "conv form: the shifts' depthwise MACs (%d per image) are skipped" % shift_macs)
        else:
            check(st["dense_macs"] == st["executed_macs"], "%s form: no MACs in its data movement, none skipped" % form)
    # the trained ShiftResNet (models/train_shift.py), both export forms, on real test images
    import fashion_mnist
    x = fashion_mnist.load("test")[0][:16]
    for form in ("conv", "slice"):
        path = os.path.join(REPO, "models", "shift", "shiftresnet_%s.onnx" % form)
        run_vs_ort(a, path, x, "trained_" + form)
        insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", "image=1x1x28x28").stdout)
        check(insp["shifts_recognised"] == 6 and sum("fused_shift" in n for n in insp["nodes"]) == 4,
              "trained %s form: 6 shifts recognised, 4 fused" % form)
    bn = [0.5, -1.5, 2.0, 0.25, 1.0, 3.0, -0.75, 1.25]  # a BatchNorm's scales, folded into the one-hot taps
    cases = [("dw_onehot", OneHotDW(8), 1), ("dw_two_hot", OneHotDW(8, two_hot=True), 0),
             # taps of another value: the shift scaled, the scales folded into the reader's weights
             ("dw_half", OneHotDW(8, value=0.5), 1), ("dw_bn_folded", OneHotDW(8, value=bn, bias=0.3), 1),
             # a one-hot conv with a bias is a shift plus a constant, folded into the 1x1 reader's
             # bias; before a padded reader (below) it stays a conv
             ("dw_bias", OneHotDW(8, bias=0.3), 1), ("slice_shift", SliceConcat("shift"), 1),
             ("slice_crop_pad_top", SliceConcat("crop_then_pad_top"), 0), ("slice_permute", SliceConcat("permute"), 0),
             # the same idea in other exporters' op patterns
             ("onehot_full_permuted", OneHotConv(8, pick=lambda o: (o * 3 + 1) % 8), 1),
             ("onehot_grouped", OneHotConv(8, groups=2), 1),
             ("onehot_dilated", OneHotConv(8, groups=8, dilation=2), 1),
             ("onehot_dw_mult2", OneHotConv(8, groups=8, mult=2), 1),
             # a strided one-hot conv shifts and subsamples; an unpadded one shifts and crops: a
             # shift step of its own (zero MACs), not fused
             ("onehot_dw_stride2", OneHotConv(8, groups=8, stride=2), 1),
             ("onehot_dw_unpadded", OneHotConv(8, groups=8, pad=0), 1),
             # tf2onnx / Keras "SAME": an explicit zero Pad, then the unpadded one-hot conv
             ("onehot_dw_explicit_pad", nn.Sequential(nn.ZeroPad2d(1), OneHotConv(8, groups=8, pad=0)), 1),
             ("pad_crop_shift", PadCrop("shift"), 1),
             ("cat_zeros_shift", CatZeros(), 1),
             ("slice_assign", SliceAssign(), 1), ("slice_assign_per_channel", SliceAssign(per_channel=True), 1),
             ("slice_assign_zero_pair", SliceAssign(skip=2), 1), ("slice_assign_zero_centre", SliceAssign(skip=0), 1),
             ("roll_mul_mask", RollMasked("mul"), 1),
             ("roll_where_mask", RollMasked("where"), 1), ("roll_assign_zero", RollMasked("assign"), 1),
             # look-alikes
             ("pad_crop_drops_column", PadCrop("drop"), 0), ("roll", Roll(), 0), ("cat_ones", CatZeros("ones"), 0),
             ("onehot_two_inputs", OneHotConv(8, pick=lambda o: o, two_inputs=True), 0),
             ("slice_assign_onto_x", SliceAssign("clone"), 0), ("slice_assign_onto_ones", SliceAssign("ones"), 0),
             ("roll_mask_wrong_edge", RollMasked("wrong_edge"), 0),
             ("onehot_centre_only", OneHotConv(8, groups=8, centre=True), 0)]
    padded = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), OneHotDW(8, bias=0.3), nn.Conv2d(8, 5, 3, padding=1))
    cases.append(("dw_bias_padded_reader", padded, 0))
    # scales alone go into a padded reader too (v * 0 is 0): a shift step of its own before the 3x3 conv
    cases.append(("dw_scaled_padded_reader", nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), OneHotDW(8, value=bn),
                                                           nn.Conv2d(8, 5, 3, padding=1)), 1))
    for name, mod, expected in cases:
        torch.manual_seed(1)
        path = os.path.join(a.work_dir, name + ".onnx")
        export(mod if name.endswith("_padded_reader") else wrap(mod, 8, out=16 if name == "onehot_dw_mult2" else None), path)
        insp, _ = compare(a, path, (2, 8, 12, 12), name)
        check(insp["shifts_recognised"] == expected,
              "%s: %d shift(s) recognised, expected %d" % (name, insp["shifts_recognised"], expected))
        if name.startswith("onehot_") and expected:  # the one-hot conv runs as a shift, fused or alone
            convs = [n for n in insp["nodes"] if n["op"] == "Conv"]
            check(len(convs) == 2, "%s: only the two 1x1 convs are left as convs (%d)" % (name, len(convs)))
        if name.startswith(("slice_assign", "roll_")) and expected:  # the whole subgraph is now the fused shift
            ops = sorted({n["op"] for n in insp["nodes"]} - {"SluiceReorder"})
            check(ops == ["Conv", "Relu"] or ops == ["Conv"], "%s: only convs are left, the shift fused (%s)" % (name, ops))
            check(sum("fused_shift" in n for n in insp["nodes"]) == 1, "%s: the shift is fused into the 1x1 conv" % name)
    channel_last_input_shift(a)
    slice_then_pad_shift(a)
    dead_channels_through_shifts(a)
    fold_overflow(a)
    shift_and_affine(a)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
