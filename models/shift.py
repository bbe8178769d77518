"""Shift layers (Wu et al., "Shift: A Zero FLOP, Zero Parameter Alternative to Spatial
Convolutions", CVPR 2018) and a ShiftResNet-style net for 28x28 Fashion-MNIST.

A shift moves each channel group by one of the kh x kw offsets (dy, dx), zero-filled:
out[c][y][x] = in[c][y + dy][x + dx]. Two export forms, both plain ONNX:
  form="conv":  a depthwise Conv with fixed one-hot kernels (groups = C);
  form="slice": per channel group, Slice channels -> Pad with zeros -> Slice back to H x W,
                then Concat on channels (what an indexing implementation exports);
  form="assign": slice assignment into zeros, out[:, c0:c1, yd, xd] = x[:, c0:c1, ys, xs]
                (PyTorch exports ScatterND chains with their index arithmetic).
The shift block (ShiftResNet's "CSC" module): 1x1 conv -> BN -> ReLU -> shift -> 1x1 conv -> BN,
plus the residual.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def offsets(kernel=3):
    r = kernel // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def groups(channels, kernel=3):
    """Channel ranges, one per offset (the centre one takes the remainder)."""
    offs = offsets(kernel)
    per = channels // len(offs)
    out, start = [], 0
    for i, o in enumerate(offs):
        n = per + (channels - per * len(offs) if o == (0, 0) else 0)
        out.append((start, start + n, o))
        start += n
    return out


class Shift(nn.Module):
    def __init__(self, channels, kernel=3, form="conv"):
        super().__init__()
        assert form in ("conv", "slice", "assign")
        self.channels, self.kernel, self.form = channels, kernel, form
        w = torch.zeros(channels, 1, kernel, kernel)
        r = kernel // 2
        for c0, c1, (dy, dx) in groups(channels, kernel):
            w[c0:c1, 0, r + dy, r + dx] = 1.0  # out[y][x] = in[y + dy][x + dx]
        self.register_buffer("weight", w)

    def forward(self, x):
        if self.form == "conv":
            return F.conv2d(x, self.weight, padding=self.kernel // 2, groups=self.channels)
        r = self.kernel // 2
        h, w = x.shape[2], x.shape[3]
        if self.form == "assign":
            out = torch.zeros_like(x)
            for c0, c1, (dy, dx) in groups(self.channels, self.kernel):
                out[:, c0:c1, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)] = \
                    x[:, c0:c1, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            return out
        parts = []
        for c0, c1, (dy, dx) in groups(self.channels, self.kernel):
            p = F.pad(x[:, c0:c1], (r, r, r, r))
            parts.append(p[:, :, r + dy:r + dy + h, r + dx:r + dx + w])
        return torch.cat(parts, 1)


class ShiftBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, expansion=3, form="conv"):
        super().__init__()
        mid = cin * expansion
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shift = Shift(mid, 3, form)
        self.conv2 = nn.Conv2d(mid, cout, 1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.shift(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ShiftResNet(nn.Module):
    """Stem conv, then shift blocks at 28, 14 and 7 pixels, GAP, FC."""

    def __init__(self, width=(16, 32, 64), form="conv", num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width[0], 3, padding=1, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU())
        blocks, cin = [], width[0]
        for i, w in enumerate(width):
            blocks += [ShiftBlock(cin, w, 1 if i == 0 else 2, form=form), ShiftBlock(w, w, form=form)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    def set_form(self, form):
        for m in self.modules():
            if isinstance(m, Shift):
                m.form = form
