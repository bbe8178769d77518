"""Feature Boosting and Suppression (Gao et al., ICLR 2019), faithful to design.md section 3.

A GatedConv2d computes, per input sample:
    s   = mean over H x W of x            (or mean |x| with saliency="absmean")
    g   = relu(W_g s + b_g)               (a Linear layer: exported as Gemm)
    k   = ceil(density * C_out)
    pi  = g on the k largest entries of g (ties: lower index first), 0 elsewhere
    y   = relu(pi * BN_noaffine(conv(x)) [+ beta * 1(pi > 0)])
Winners keep their saliency as a multiplier, losers are zeroed. The optional beta
is "masked" (added only where pi > 0), "unmasked" (added everywhere: a suppressed
channel then equals relu(beta)), or "none".

Export uses standard ONNX ops only (GlobalAveragePool/ReduceMean, Gemm, Relu, TopK,
ScatterElements, Mul, Add) so ONNX Runtime runs the very same file.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class GatedConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=None, density=1.0,
                 beta="masked", saliency="mean", form="winners", act=True, groups=1):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        assert beta in ("masked", "unmasked", "none")
        assert saliency in ("mean", "absmean")
        assert form in ("winners", "losers")
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(cout, affine=False)
        self.gate = nn.Linear(cin, cout)
        nn.init.constant_(self.gate.bias, 1.0)  # start with every channel open
        self.beta_mode = beta
        self.beta = nn.Parameter(torch.zeros(cout)) if beta != "none" else None
        self.saliency = saliency
        self.form = form
        self.density = density
        self.act = act  # False: no ReLU here (a residual block's second conv, before the add)
        # groups = cin = cout: a depthwise conv (MobileNet), whose gate picks channels of both sides
        self.cout = cout
        self.last_gate = None  # g of the last forward, for the L1 penalty

    def k(self):
        return max(1, min(self.cout, math.ceil(self.density * self.cout)))

    def gate_values(self, x):
        s = (x.abs() if self.saliency == "absmean" else x).mean(dim=(2, 3))
        return F.relu(self.gate(s))

    def select(self, g):
        k = self.k()  # the top-k ops are exported even at k = C_out, so the gate stays recognisable
        if self.form == "winners":
            values, idx = torch.topk(g, k, dim=1)
            return torch.zeros_like(g).scatter(1, idx, values)
        # losers form: zero the C_out - k smallest (the largest of -g)
        if k >= self.cout:
            return g
        _, idx = torch.topk(-g, self.cout - k, dim=1)
        return g.scatter(1, idx, torch.zeros_like(g[:, : self.cout - k]))

    def forward(self, x):
        g = self.gate_values(x)
        self.last_gate = g
        pi = self.select(g)
        y = self.bn(self.conv(x)) * pi[:, :, None, None]
        if self.beta_mode == "masked":
            y = y + self.beta[None, :, None, None] * (pi > 0).float()[:, :, None, None]
        elif self.beta_mode == "unmasked":
            y = y + self.beta[None, :, None, None]
        return F.relu(y) if self.act else y


def gate_l1(model):
    """The L1 penalty on gate outputs (sum over gated layers of mean |g|)."""
    return sum(m.last_gate.abs().mean() for m in model.modules()
               if isinstance(m, GatedConv2d) and m.last_gate is not None)


def set_density(model, density):
    for m in model.modules():
        if isinstance(m, GatedConv2d):
            m.density = density


class MCifarNetFBS(nn.Module):
    """An M-CifarNet-style net for 1x28x28 inputs: the first conv is dense (one input
    channel gives the predictor nothing to read), the other seven are gated."""

    def __init__(self, density=1.0, width=(32, 32, 64, 64, 64, 96, 96, 96), num_classes=10, **gate_kw):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w[0], 3, padding=1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        strides = [1, 2, 1, 1, 2, 1, 1]
        self.gated = nn.ModuleList(
            GatedConv2d(w[i], w[i + 1], 3, strides[i], density=density, **gate_kw) for i in range(7))
        self.fc = nn.Linear(w[-1], num_classes)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.gated:
            x = layer(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
