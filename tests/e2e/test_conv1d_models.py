#!/usr/bin/env python3
"""1-D CNNs (Conv1d, BatchNorm1d, MaxPool1d, padded AvgPool1d (Pad + AveragePool), PReLU,
depthwise and dilated Conv1d, InstanceNorm1d, residual Add, Concat over channels and over the length, mean over
the length, Linear) exported by PyTorch, run by Sluice and
by ONNX Runtime on the same file. Sluice runs them as 2-D layers on [N, C, 1, L]
(graph/passes/lift_1d.cpp): the checks are that the outputs agree, that no Squeeze/Unsqueeze
is left between the layers (they fold, fuse and prune as 2-D ones), and that a slimmed 1-D net
loses exactly the channels, and runs exactly the MACs, of the same net written with Conv2d
(1 x k kernels) and exported the same way.

    .venv/bin/python tests/e2e/test_conv1d_models.py --sluice build/sluice --work-dir build/e2e_conv1d
"""
import json
import os
import re
import sys

import numpy as np

from e2e_util import check, run_parts, run_sluice, run_vs_ort


def make_net(two_d, prune):
    """The 1-D net, or (two_d) the same layers as Conv2d/BatchNorm2d/pools over [N, C, 1, L]
    with 1 x k windows; prune: some BN scales and their shifts zeroed (network slimming)."""
    import torch
    import torch.nn as nn

    def conv(c, m, k, **kw):
        if not two_d:
            return nn.Conv1d(c, m, k, **kw)
        kw = {key: ((0, v) if key == "padding" else (1, v)) if key in ("padding", "stride", "dilation") else v
              for key, v in kw.items()}
        return nn.Conv2d(c, m, (1, k), **kw)

    bn = nn.BatchNorm2d if two_d else nn.BatchNorm1d

    def pool(kind, k, s, p):
        if two_d:
            return (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)((1, k), (1, s), (0, p))
        return (nn.MaxPool1d if kind == "max" else nn.AvgPool1d)(k, s, p)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv(4, 16, 5, padding=2, bias=False), bn(16), nn.ReLU(), pool("max", 3, 2, 1))
            self.b1 = nn.Sequential(conv(16, 16, 3, padding=1, bias=False), bn(16), nn.ReLU(),
                                    conv(16, 16, 3, padding=1, bias=False), bn(16))
            self.down = nn.Sequential(conv(16, 24, 3, stride=2, dilation=2, padding=2), bn(24), nn.PReLU(24),
                                      pool("avg", 3, 2, 1))
            self.dw = nn.Sequential(conv(24, 24, 3, padding=1, groups=24), nn.Sigmoid())
            inorm = nn.InstanceNorm2d if two_d else nn.InstanceNorm1d
            self.side = nn.Sequential(conv(24, 8, 1), inorm(8, affine=True), nn.LeakyReLU(0.1))
            self.post_bn = bn(32)  # after the Concat: not foldable into a conv
            self.fc = nn.Linear(32, 5)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.b1(x))
            x = self.down(x)
            x = torch.cat([self.dw(x) * x, self.side(x)], 1)
            x = torch.cat([x, torch.relu(x)], -1)  # along the length
            x = self.post_bn(x).mean(dim=-1)
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    net = Net()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    if prune:
        # Slimmed channels: the stem's and the residual stream's (both writers), and the first
        # conv of the block: scale and shift 0, so each is an all-zero channel after folding.
        for m, chans in ((net.stem[1], [1, 6, 7]), (net.b1[4], [1, 6, 7]), (net.b1[1], [0, 3, 4, 9])):
            m.weight.data[chans] = 0
            m.bias.data[chans] = 0
    return net.eval()


def export(a, name, two_d, prune, length=64):
    import torch

    net = make_net(two_d, prune)
    shape = (1, 4, 1, length) if two_d else (1, 4, length)
    path = os.path.join(a.work_dir, name + ".onnx")
    torch.onnx.export(net, torch.randn(*shape), path, opset_version=13, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path


def inspect(a, path, *extra):
    return run_sluice(a, "inspect", path, *extra).stdout


def compare(a):
    """The 1-D net against ORT, batch 1 and 3, 1 and 2 threads; and what the graph became."""
    path = export(a, "conv1d_net", False, False)
    rng = np.random.default_rng(0)
    for n in (1, 3):
        x = rng.standard_normal((n, 4, 64)).astype(np.float32)
        for t in ("1", "2"):
            run_vs_ort(a, path, x, "conv1d_b%d_t%s" % (n, t), "--threads", t, input_name="x",
                       output_name="y")
    text = inspect(a, path, "-s", "x=1x4x64")
    steps = [l for l in text.splitlines() if l.startswith("  ") and "'" in l]
    ops = [l.split()[0] for l in steps]
    check(ops.count("Conv") == 6, "6 convs in the plan: %s" % ops)
    check(ops.count("Squeeze") == 0 and ops.count("Unsqueeze") <= 1,
          "no Squeeze/Unsqueeze between the layers (only the input's Unsqueeze): %s" % ops)
    check(all("[1, " in l and ", 1, " in l for l in steps if l.split()[0] == "Conv"),
          "the convs run on [N, C, 1, L]")
    check(ops.count("BatchNormalization") == 1, "the BNs behind convs are folded (the one after the Concat "
          "stays): %s" % ops)


def macs_and_removed(a, path, length):
    text = inspect(a, path, "-s", "x=1x4x1x%d" % length if "2d" in path else "x=1x4x%d" % length)
    m = re.search(r"pruning: (\d+) channels removed.*?; ([0-9.e+-]+) of ([0-9.e+-]+) M MACs left", text)
    check(m is not None, "%s: inspect reports pruning" % os.path.basename(path))
    return (int(m.group(1)), float(m.group(2)), float(m.group(3))) if m else (0, 0.0, 0.0)


def slimmed(a):
    """Slimmed 1-D net: the channels Sluice removes and the MACs it runs are those of the same
    net written in 2-D, and the output agrees with ORT."""
    p1 = export(a, "conv1d_slim", False, True)
    p2 = export(a, "conv1d_slim_2d", True, True)
    r1, r2 = macs_and_removed(a, p1, 64), macs_and_removed(a, p2, 64)
    check(r1[0] > 0, "the slimmed 1-D net loses channels (%d)" % r1[0])
    check(r1 == r2, "1-D and 2-D nets: removed / MACs left / dense %s vs %s" % (r1, r2))
    x = np.random.default_rng(1).standard_normal((2, 4, 64)).astype(np.float32)
    _, _, stats = run_vs_ort(a, p1, x, "conv1d_slim", input_name="x", output_name="y")
    x2 = x.reshape(2, 4, 1, 64)
    _, _, stats2 = run_vs_ort(a, p2, x2, "conv1d_slim_2d", input_name="x", output_name="y")
    check(stats["executed_macs"] == stats2["executed_macs"] and stats["executed_macs"] < stats["dense_macs"],
          "executed MACs 1-D %d, 2-D %d, dense %d" % (stats["executed_macs"], stats2["executed_macs"],
                                                      stats["dense_macs"]))


def conv_output(a):
    """A 1-D conv whose output is the graph's (its Squeeze stays), and odd lengths."""
    import torch
    import torch.nn as nn

    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv1d(3, 5, 4, stride=3, padding=2), nn.ReLU(), nn.Conv1d(5, 7, 2)).eval()
    path = os.path.join(a.work_dir, "conv1d_last.onnx")
    torch.onnx.export(net, torch.randn(1, 3, 31), path, opset_version=11, input_names=["x"], output_names=["y"])
    x = np.random.default_rng(2).standard_normal((1, 3, 31)).astype(np.float32)
    run_vs_ort(a, path, x, "conv1d_last", input_name="x", output_name="y")


def gated(a):
    """An FBS gate on a Conv1d (mean |x| over the length -> Linear -> ReLU -> top-k -> scatter,
    the conv's output times g[:, :, None]): recognised as on a Conv2d, at batch 1 and 3 on 1 and
    2 threads, and with gating off; also on a gated conv that reads the model's input itself,
    with or without a plain Conv1d on that input before it.
    (The gate's [N, C, 1] operand once kept the conv's Squeeze above the Mul, and the gate was
    not even listed; on the model's input, its pool over the length was not taken for one
    over the conv's input.)"""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class GatedConv1d(nn.Module):
        def __init__(self, stem, k=5, side=False):
            super().__init__()
            c = 8 if stem else 3
            self.stem = nn.Conv1d(3, 8, 3, padding=1) if stem else None
            # side: a plain Conv1d on the same input, traced before the gated one
            self.side = nn.Conv1d(c, 16, 3, padding=1) if side else None
            self.conv = nn.Conv1d(c, 16, 5, padding=2)
            self.gate, self.k = nn.Linear(c, 16), k
            nn.init.uniform_(self.gate.bias, 0.2, 1.0)

        def forward(self, x):
            if self.stem is not None:
                x = F.relu(self.stem(x))
            s = self.side(x) if self.side is not None else 0
            g = F.relu(self.gate(x.abs().mean(2)))
            v, i = g.topk(self.k, 1)
            pi = torch.zeros_like(g).scatter(1, i, v)
            return F.relu(self.conv(x) * pi[:, :, None]) + s

    for stem, side in ((True, False), (False, False), (False, True)):
        torch.manual_seed(1)
        name = "conv1d_gated" + ("" if stem else "_on_input") + ("_after_a_plain_conv" if side else "")
        path = os.path.join(a.work_dir, name + ".onnx")
        torch.onnx.export(GatedConv1d(stem, side=side).eval(), torch.randn(1, 3, 20), path, opset_version=13, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        text = inspect(a, path, "--shape", "x=1x3x20")
        summary = [ln for ln in text.splitlines() if ln.startswith("gates:")]
        check(summary == ["gates: 1 of 1 recognised"] and "SluiceGatedConv" in text,
              "%s: the gate is recognised (%s)" % (name, summary))
        for n in (1, 3):
            x = np.random.default_rng(n).standard_normal((n, 3, 20)).astype(np.float32)
            for extra in (("--threads", "1"), ("--threads", "2"), ("--gating", "off")):
                run_vs_ort(a, path, x, "%s_b%d_%s" % (name, n, extra[1]), *extra, input_name="x", output_name="y")


if __name__ == "__main__":
    sys.exit(run_parts(__doc__, [compare, slimmed, conv_output, gated]))
