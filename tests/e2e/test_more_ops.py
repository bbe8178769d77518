#!/usr/bin/env python3
"""Operators that classifiers from other sources end in or use on the way, run by Sluice and by
ONNX Runtime on the same file: LogSoftmax (the classic PyTorch MNIST net's last step), ArgMax /
ArgMin, Selu, Celu, ThresholdedRelu, Reciprocal, Floor, Ceil, Round, Sign, Tan, the inverse
and hyperbolic trigonometric functions, Sum / Mean of several tensors, GlobalMaxPool, the
reductions ReduceL1 / L2 / SumSquare / LogSum / LogSumExp / Prod, the image ops
InstanceNormalization, DepthToSpace / SpaceToDepth, Tile, IsNaN / IsInf, Hardmax,
GatherElements, OneHot, Mod, CumSum, ConvTranspose (1-D and 2-D), Resize / Upsample, LRN in
an AlexNet-shaped net as converted from Caffe, LpPool / GlobalLpPool, and torch's
LocalResponseNorm and squeeze of a dynamic axis (an If decided by shapes, a 3-D AveragePool),
and Einsum.

Each check first asserts that the exported file really contains the operator (so a change in
PyTorch's exporter cannot make a check pass vacuously), then compares the outputs with ORT's.
Bad attributes (an ArgMax axis past the rank, a ReduceL2 axis past the rank) get errors that
name the node.

    .venv/bin/python tests/e2e/test_more_ops.py --sluice build/sluice --work-dir build/e2e_more_ops
"""
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from e2e_util import check, expect_refusal, run_parts, run_sluice, run_vs_ort


def export(a, net, name, shape, opset=13):
    import torch

    torch.manual_seed(0)
    path = os.path.join(a.work_dir, name + ".onnx")
    torch.onnx.export(net.eval(), torch.randn(*shape), path, opset_version=opset, input_names=["image"],
                      output_names=["logits"])
    return path


def ops_in(path):
    return {n.op_type for n in onnx.load(path).graph.node}


def expect_ops(path, want):
    have = ops_in(path)
    missing = sorted(set(want) - have)
    check(not missing, "%s contains %s (missing: %s)" % (os.path.basename(path), ", ".join(sorted(want)), missing))


def mnist_net(a):
    """The PyTorch MNIST example's shape: conv, conv, max pool, two Linears, log_softmax; and
    the same net's predicted class (argmax)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self, argmax=False):
            super().__init__()
            self.argmax = argmax
            self.c1, self.c2 = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 16, 3)
            self.f1, self.f2 = nn.Linear(16 * 12 * 12, 32), nn.Linear(32, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 2)
            x = F.log_softmax(self.f2(F.relu(self.f1(torch.flatten(x, 1)))), dim=1)
            return torch.argmax(x, dim=1) if self.argmax else x

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    torch.manual_seed(0)
    net = Net()
    path = export(a, net, "mnist_log_softmax", (4, 1, 28, 28))
    expect_ops(path, {"LogSoftmax"})
    y, ref, _ = run_vs_ort(a, path, x, "mnist_log_softmax")
    check(np.allclose(np.exp(y).sum(1), 1, atol=1e-4), "log_softmax rows are log-probabilities (exp sums to 1)")
    net.argmax = True
    path = export(a, net, "mnist_argmax", (4, 1, 28, 28))
    expect_ops(path, {"ArgMax"})
    y, ref, _ = run_vs_ort(a, path, x, "mnist_argmax", tol=0)
    check(y.dtype == np.int64 and y.shape == (4,), "argmax gives int64 class indices, shape %s" % (y.shape,))


def elementwise(a):
    """Activations and rounding on the input itself (no conv before them, so both runtimes round
    the very same values), then a conv so the layout passes see them in a network."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(11, 4, 3, padding=1)  # 11 parts

        def forward(self, x):
            t = torch.tanh(x) * 0.9
            parts = [nn.functional.selu(x), nn.functional.celu(x, 0.7), torch.reciprocal(x.abs() + 1),
                     torch.floor(x * 4), torch.ceil(x * 4), torch.round(x * 4 + 0.25), torch.sign(x),
                     torch.tan(x * 0.5), torch.atan(x), torch.asin(t), torch.acos(t)]
            return self.conv(torch.cat(parts, 1))

    x = np.random.default_rng(2).standard_normal((2, 1, 9, 11)).astype(np.float32)
    path = export(a, Net(), "elementwise", (2, 1, 9, 11))
    expect_ops(path, {"Selu", "Celu", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Tan", "Atan", "Asin", "Acos"})
    run_vs_ort(a, path, x, "elementwise")


def reductions(a):
    """Norms, logsumexp and prod, as PyTorch exports them."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            feats = [torch.norm(y, p=2, dim=(2, 3)), torch.norm(y, p=1, dim=(2, 3)), torch.logsumexp(y, dim=(2, 3)),
                     torch.prod(torch.sigmoid(y[:, :, :3, :3]) + 0.5, dim=3).sum(2)]
            return torch.cat(feats, 1)

    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    path = export(a, Net(), "reductions", (2, 3, 8, 8))
    expect_ops(path, {"ReduceL2", "ReduceL1", "ReduceLogSumExp", "ReduceProd"})
    run_vs_ort(a, path, x, "reductions")


def image_ops(a):
    """A super-resolution-style tail: InstanceNorm, pixel_shuffle (DepthToSpace CRD), repeat
    (Tile), and an isnan/isinf clean-up (IsNaN, IsInf), as PyTorch exports them; with a second
    output so both reach ORT's comparison."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.norm = nn.InstanceNorm2d(8, affine=True)
            with torch.no_grad():
                self.norm.weight.uniform_(0.5, 1.5)
                self.norm.bias.uniform_(-0.5, 0.5)

        def forward(self, x):
            x = torch.where(torch.isnan(x) | torch.isinf(x), torch.zeros_like(x), x)
            y = nn.functional.pixel_shuffle(self.norm(self.conv(x)), 2)
            return y.repeat(1, 2, 1, 3)

    x = np.random.default_rng(5).standard_normal((2, 3, 6, 7)).astype(np.float32)
    x[0, 1, 2, 3], x[1, 2, 0, 0], x[1, 0, 5, 6] = np.nan, np.inf, -np.inf
    path = export(a, Net(), "image_ops", (2, 3, 6, 7))
    expect_ops(path, {"InstanceNormalization", "DepthToSpace", "Tile", "IsNaN", "IsInf"})
    y, _, _ = run_vs_ort(a, path, x, "image_ops")
    check(y.shape == (2, 4, 12, 42) and np.isfinite(y).all(), "image_ops: shape %s, NaN/inf cleaned" % (y.shape,))


def conv_transpose(a):
    """ConvTranspose as PyTorch exports it (constant weights: oneDNN's deconvolution, or for a
    strided 2-D one a 1x1 conv or one conv per output phase), in the
    configurations decoders use: stride 2 with padding and output_padding, groups, dilation,
    no bias, 1-D; and an output_shape past the kernel's reach (negative end padding: the
    reference kernel)."""
    import torch
    import torch.nn as nn

    from e2e_util import run_sluice

    # (k = stride, unpadded: U-Net's upsampling, as a 1x1 conv whose values go to their own pixels;
    # between convs, on NHWC, square and not, with and without bias, as the output)
    cases = [("s2_p1_op1", nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1), (2, 6, 5, 7)),
             ("groups2_dil2", nn.ConvTranspose2d(6, 4, 3, stride=1, padding=2, dilation=2, groups=2), (1, 6, 6, 5)),
             ("k4_s2_nobias", nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1, bias=False), (1, 3, 8, 8)),
             ("1d_s3", nn.ConvTranspose1d(4, 3, 5, stride=3, padding=1, output_padding=2), (2, 4, 9)),
             ("k2_s2_unet", nn.Sequential(nn.Conv2d(5, 7, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(7, 3, 2, stride=2),
                                          nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1)), (2, 5, 9, 11)),
             ("k2x3_s2x3_nobias", nn.ConvTranspose2d(6, 5, (2, 3), stride=(2, 3), bias=False), (3, 6, 4, 70)),
             # (1-D ones run as 2-D on [N, C, 1, L], so these kernels take them too)
             ("k2_s2_1d", nn.ConvTranspose1d(6, 4, 2, stride=2), (2, 6, 50)),
             ("1d_k4_s2_p1", nn.ConvTranspose1d(5, 3, 4, stride=2, padding=1), (1, 5, 40))]
    for name, layer, shape in cases:
        torch.manual_seed(0)
        net = nn.Sequential(layer, nn.ReLU())
        x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
        path = export(a, net, "convtranspose_" + name, shape)
        expect_ops(path, {"ConvTranspose"})
        _, _, st = run_vs_ort(a, path, x, "convtranspose_" + name)
        kernel = run_sluice(a, "inspect", path).stdout
        # (strided 2-D: a 1x1 conv where the stride is the kernel, else one conv per output phase)
        k_is_stride, phases = name.startswith("k2"), name in ("s2_p1_op1", "k4_s2_nobias", "1d_k4_s2_p1")
        want_kernel = "deconv as onednn:" if k_is_stride else "deconv by phases:" if phases else "onednn:deconv"
        check(want_kernel in kernel, "convtranspose_%s runs on %s" % (name, want_kernel))
        if k_is_stride:  # (the MAC count below is for the lone layer)
            continue
        # N * C_in * (C_out / groups) * k... * input pixels: every input pixel meets every tap
        want = shape[0] * layer.weight.numel() * int(np.prod(shape[2:]))
        check(st["dense_macs"] == st["executed_macs"] == want,
              "convtranspose_%s: MACs %d dense, %d executed, %d = N * weights * input pixels" % (
                  name, st["dense_macs"], st["executed_macs"], want))
    x = np.random.default_rng(7).standard_normal((1, 2, 3, 3)).astype(np.float32)
    w = np.random.default_rng(8).standard_normal((2, 3, 3, 3)).astype(np.float32)
    (y, _, _), path = single(a, "convtranspose_output_shape",
                             [helper.make_node("ConvTranspose", ["image", "w"], ["logits"], strides=[3, 2], output_shape=[10, 8])],
                             {"w": w}, [1, 3, 10, 8], 13, x)
    check(y.shape == (1, 3, 10, 8) and "ConvTranspose" in run_sluice(a, "inspect", path).stdout,
          "ConvTranspose with an output_shape past the kernel's reach: [1, 3, 10, 8]")


def resize(a):
    """Resize as PyTorch's F.interpolate exports it (constant scales or sizes): nearest, bilinear
    with and without align_corners, bicubic, downsampling, and an FPN-style top-down add; and
    single nodes for every coordinate mode and nearest rounding with constant scales, cubic with
    exclude_outside, axes (opset 18), and Upsample at opset 9."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(3, 8, 1)

        def forward(self, x):
            top = self.c1(x)  # 7 x 9 from 13 x 17
            if self.kind == "nearest":
                return F.interpolate(top, scale_factor=2, mode="nearest")
            if self.kind == "bilinear":
                return F.interpolate(top, scale_factor=2, mode="bilinear", align_corners=False)
            if self.kind == "bilinear_corners":
                return F.interpolate(top, size=(13, 17), mode="bilinear", align_corners=True)
            if self.kind == "bicubic":
                return F.interpolate(top, scale_factor=3, mode="bicubic", align_corners=False)
            if self.kind == "down":
                return F.interpolate(top, scale_factor=0.5, mode="bilinear", align_corners=False)
            return self.c2(x) + F.interpolate(top, size=x.shape[2:], mode="nearest")  # fpn

    x = np.random.default_rng(10).standard_normal((2, 3, 13, 17)).astype(np.float32)
    for kind in ("nearest", "bilinear", "bilinear_corners", "bicubic", "down", "fpn"):
        torch.manual_seed(0)
        path = export(a, Net(kind), "resize_" + kind, (2, 3, 13, 17))
        expect_ops(path, {"Resize"})
        run_vs_ort(a, path, x, "resize_" + kind)
    x = np.random.default_rng(11).standard_normal((1, 2, 5, 7)).astype(np.float32)
    roi = np.array([], np.float32)
    for coords in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"):
        for mode, nearest in (("nearest", "round_prefer_floor"), ("nearest", "round_prefer_ceil"), ("nearest", "floor"),
                              ("nearest", "ceil"), ("linear", "floor"), ("cubic", "floor")):
            for sc in ((1, 1, 2.5, 1.6), (1, 1, 0.6, 0.45)):
                node = helper.make_node("Resize", ["image", "roi", "scales"], ["logits"], mode=mode, nearest_mode=nearest,
                                        coordinate_transformation_mode=coords)
                out = [1, 2, int(5 * sc[2]), int(7 * sc[3])]
                single(a, "resize_%s_%s_%s_%s" % (coords, mode, nearest, "up" if sc[2] > 1 else "down"), [node],
                       {"roi": roi, "scales": np.array(sc, np.float32)}, out, 13, x)
    node = helper.make_node("Resize", ["image", "roi", "scales"], ["logits"], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1)
    single(a, "resize_cubic_exclude_outside", [node], {"roi": roi, "scales": np.array([1, 1, 2.0, 0.5], np.float32)},
           [1, 2, 10, 3], 13, x)
    node = helper.make_node("Resize", ["image", "", "", "sizes"], ["logits"], mode="linear", axes=[3, 2])
    single(a, "resize_axes_18", [node], {"sizes": np.array([11, 4], np.int64)}, [1, 2, 4, 11], 18, x)
    node = helper.make_node("Upsample", ["image", "scales"], ["logits"], mode="nearest")
    single(a, "upsample_9", [node], {"scales": np.array([1, 1, 2, 3], np.float32)}, [1, 2, 10, 21], 9, x)
    # Output sizes in float32, as ORT: 10 x 0.7f and 10 x 1.4f are 7 and 14 there, 6.99999988 and
    # 13.9999998 in double (a probe found Sluice one pixel short; F.interpolate(scale_factor=0.7)
    # exports such scales).
    x10 = np.random.default_rng(12).standard_normal((1, 2, 10, 10)).astype(np.float32)
    for sc, out in (((1, 1, 1.4, 0.7), [1, 2, 14, 7]), ((1, 1, 0.7, 2.3), [1, 2, 7, 23])):
        single(a, "resize_float32_sizes_%g" % sc[2], [helper.make_node("Resize", ["image", "roi", "scales"], ["logits"],
                                                                      mode="linear")],
               {"roi": roi, "scales": np.array(sc, np.float32)}, out, 13, x10)
    single(a, "upsample_9_float32_size", [helper.make_node("Upsample", ["image", "scales"], ["logits"], mode="nearest")],
           {"scales": np.array([1, 1, 1.4, 2.6], np.float32)}, [1, 2, 14, 26], 9, x10)
    for sc in ((1, 1, 2.5, 1.6), (1, 1, 0.6, 0.45)):  # opset 10: nearest floors up and ceils down, as ORT
        for mode in ("nearest", "linear"):
            single(a, "resize_10_%s_%s" % (mode, "up" if sc[2] > 1 else "down"),
                   [helper.make_node("Resize", ["image", "scales"], ["logits"], mode=mode)],
                   {"scales": np.array(sc, np.float32)}, [1, 2, int(5 * sc[2]), int(7 * sc[3])], 10, x)


def single(a, name, nodes, inits, out_shape, opset, x, out_type=TensorProto.FLOAT, tol=1e-4):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("logits", out_type, out_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    path = os.path.join(a.work_dir, name + ".onnx")
    onnx.save(m, path)
    return run_vs_ort(a, path, x, name, tol=tol), path


def run_model(a, name, nodes, inits, x, in_name="image", out_name="logits", elem=TensorProto.FLOAT, out_shape=None,
              check_ok=True, opset=13, out_elem=None):
    """Saves a graph of `nodes` with one input (x, or none if x is None) and one output, runs
    `sluice run` on it; returns (the output or None, the finished process)."""
    ins = [] if x is None else [helper.make_tensor_value_info(in_name, elem, list(x.shape))]
    g = helper.make_graph(nodes, name, ins, [helper.make_tensor_value_info(out_name, out_elem or elem, out_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset >= 13 else 7 if opset >= 12 else 5
    path = os.path.join(a.work_dir, name + ".onnx")
    onnx.save(m, path)
    args = []
    if x is not None:
        np.save(os.path.join(a.work_dir, name + "_x.npy"), x)
        args = ["--input", in_name + "=" + os.path.join(a.work_dir, name + "_x.npy")]
    out = os.path.join(a.work_dir, name + "_out")
    r = run_sluice(a, "run", path, *args, "--output-dir", out, check_ok=check_ok, timeout=120)
    return (np.load(os.path.join(out, out_name + ".npy")) if r.returncode == 0 else None), r


def sums_over_nothing(a):
    """Convs, Gemm and MatMul over zero input channels (K = 0). oneDNN refuses the shapes; Sluice
    called that its own bug until a probe found it. Checked against the spec's values (the sum
    over nothing is 0, plus the bias), not ORT: ORT 1.20 drops a conv's bias and Gemm's beta there
    (torch.addmm applies beta), and its conv without a bias once returned whatever was in memory
    (19 where 0 was due) in this suite."""
    rng = np.random.default_rng(13)
    b = rng.standard_normal(5).astype(np.float32)
    x = np.zeros((2, 0, 6, 7), np.float32)
    w = np.zeros((5, 0, 3, 3), np.float32)
    res = rng.standard_normal((2, 5, 6, 7)).astype(np.float32)
    x2 = np.zeros((3, 0), np.float32)
    cases = [("conv_zero_cin_no_bias", [helper.make_node("Conv", ["image", "w"], ["logits"])], {"w": w}, x,
              np.zeros((2, 5, 4, 5), np.float32)),
             ("matmul_zero_k", [helper.make_node("MatMul", ["image", "wg"], ["logits"])],
              {"wg": np.zeros((0, 5), np.float32)}, x2, np.zeros((3, 5), np.float32)),
             ("conv_zero_cin_bias", [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                                     helper.make_node("Add", ["c", "res"], ["s"]),
                                     helper.make_node("Relu", ["s"], ["logits"])],
              {"w": w, "b": b, "res": res}, x, np.maximum(b.reshape(1, 5, 1, 1) + res, 0)),
             ("conv_zero_cin_bias_relu", [helper.make_node("Conv", ["image", "w", "b"], ["c"]),
                                          helper.make_node("Relu", ["c"], ["logits"])],
              {"w": w, "b": b}, x, np.broadcast_to(np.maximum(b, 0).reshape(1, 5, 1, 1), (2, 5, 4, 5))),
             ("gemm_zero_k_beta", [helper.make_node("Gemm", ["image", "wg", "b"], ["logits"], beta=0.5)],
              {"wg": np.zeros((0, 5), np.float32), "b": b}, x2, np.broadcast_to(0.5 * b, (3, 5)))]
    for name, nodes, inits, xin, want in cases:
        y, _ = run_model(a, name, nodes, inits, xin, out_shape=list(want.shape))
        err = np.abs(y - want).max() if y.shape == want.shape else float("inf")
        check(err < 1e-6, "%s: the spec's value, bias and epilogue over a sum of nothing (max |diff| %.2g)" % (name, err))


def dropout_masks(a):
    """Dropout's mask output at inference: every element kept, as ONNX's reference implementation
    gives: 1 in the data's type at opsets 7-9 (refused before: Sluice made it bool), true from
    opset 10. (ONNX Runtime 1.20 gives 0 and false.)"""
    x = np.random.default_rng(14).standard_normal((1, 3, 5, 7)).astype(np.float32)
    for opset, elem, want in ((7, TensorProto.FLOAT, np.ones(x.shape, np.float32)),
                              (9, TensorProto.FLOAT, np.ones(x.shape, np.float32)),
                              (10, TensorProto.BOOL, np.ones(x.shape, bool))):
        name = "dropout_mask_%d" % opset
        y, _ = run_model(a, name, [helper.make_node("Dropout", ["image"], ["y", "logits"], ratio=0.3)], {}, x,
                         out_shape=list(x.shape), opset=opset, out_elem=elem)
        check(y.dtype == want.dtype and np.array_equal(y, want), "%s: mask %s, all kept" % (name, y.dtype))


def declared_output_shapes(a):
    """`sluice run` says when an output's shape differs from the one the model declares (ORT
    warns too): the Resize rounding bug gave one pixel less than the file declared, silently.
    A declared unknown dimension, or a shape that agrees, gives no note. At every opset: up to
    17 ONNX's shape inference, which Sluice runs at load, once refused such a file ("differ in
    rank: (4) vs (0)" for a rank-0 placeholder, naming neither the output nor the fix)."""
    x = np.random.default_rng(15).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for opset in (13, 17, 18):
        for name, declared, noted in (("declared_lie", [1, 2, 3, 3], True), ("declared_rank0", [], True),
                                      ("declared_rank2", ["a", "b"], True), ("declared_right", [1, 2, 4, 4], False),
                                      ("declared_dynamic", ["n", 2, 4, 4], False)):
            tag = "%s_o%d" % (name, opset)
            y, r = run_model(a, tag, [helper.make_node("Relu", ["image"], ["logits"])], {}, x, out_shape=declared,
                             opset=opset)
            note = "note: output 'logits' has shape [1, 2, 4, 4], where the model declares"
            check((note in r.stderr) == noted, "%s: %s (stderr: %s)" % (tag, "noted" if noted else "no note",
                                                                        r.stderr.strip()[:200]))
            check(np.array_equal(y, np.maximum(x, 0)), "%s: the output is the computed one" % tag)
        # A declared element type that the node does not compute is refused, naming the output
        # (up to opset 17 ONNX's own message named neither the output nor the node).
        _, r = run_model(a, "declared_int64_o%d" % opset, [helper.make_node("Relu", ["image"], ["logits"])], {}, x,
                         out_shape=[1, 2, 4, 4], opset=opset, out_elem=TensorProto.INT64, check_ok=False)
        check(r.returncode != 0 and "graph output 'logits' is declared int64" in r.stderr,
              "declared_int64_o%d: refused naming the output (%s)" % (opset, r.stderr.strip()[:200]))


def single_nodes(a):
    """Forms PyTorch does not write: variadic Sum / Mean with broadcasting, ThresholdedRelu,
    DepthToSpace DCR, SpaceToDepth, Hardmax on ties, GatherElements with negative indices,
    OneHot of an ArgMax, Mod (fmod), CumSum (exclusive, reverse),
    GlobalMaxPool (PyTorch writes a MaxPool over the whole map), the hyperbolic functions,
    ReduceSumSquare / ReduceLogSum (attribute axes at 13, input axes at 18), ArgMin with
    select_last_index on ties, LogSoftmax's opset-11 form (softmax over the flattened tail),
    TopK with sorted = 0 (in ORT's order)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    ties = np.round(x * 2) / 2  # many equal values per row
    b1 = rng.standard_normal((3, 1, 5)).astype(np.float32)
    b2 = rng.standard_normal((1, 1, 1, 5)).astype(np.float32)
    for op in ("Sum", "Mean"):
        single(a, "variadic_" + op.lower(), [helper.make_node(op, ["image", "b1", "b2"], ["logits"])],
               {"b1": b1, "b2": b2}, [2, 3, 4, 5], 13, x)
    single(a, "global_max_pool", [helper.make_node("GlobalMaxPool", ["image"], ["logits"])], {}, [2, 3, 1, 1], 13, x)
    # PyTorch 2.x does not export these at opset 13.
    for op, xin in (("Sinh", x), ("Cosh", x), ("Asinh", x), ("Acosh", np.abs(x) + 1.5), ("Atanh", np.tanh(x) * 0.9)):
        single(a, op.lower(), [helper.make_node(op, ["image"], ["logits"])], {}, [2, 3, 4, 5], 13, xin)
    single(a, "thresholded_relu", [helper.make_node("ThresholdedRelu", ["image"], ["logits"], alpha=0.4)], {},
           [2, 3, 4, 5], 13, x)
    for op in ("ReduceSumSquare", "ReduceLogSum"):
        xin = np.abs(x) + 0.1 if op == "ReduceLogSum" else x
        single(a, op.lower() + "_13", [helper.make_node(op, ["image"], ["logits"], axes=[1, 3], keepdims=0)], {},
               [2, 4], 13, xin)
        single(a, op.lower() + "_18", [helper.make_node(op, ["image", "axes"], ["logits"], keepdims=1)],
               {"axes": np.array([-1], np.int64)}, [2, 3, 4, 1], 18, xin)
    for last in (0, 1):
        (y, ref, _), _ = single(a, "argmin_last%d" % last,
                                [helper.make_node("ArgMin", ["image"], ["logits"], axis=2, keepdims=0, select_last_index=last)],
                                {}, [2, 3, 5], 13, ties, out_type=TensorProto.INT64, tol=0)
        check(y.dtype == np.int64 and y.shape == (2, 3, 5), "ArgMin select_last_index=%d: int64 [2, 3, 5]" % last)
    for mode in ("DCR", "CRD"):
        single(a, "depth_to_space_" + mode.lower(), [helper.make_node("DepthToSpace", ["image"], ["logits"], blocksize=2, mode=mode)],
               {}, [2, 1, 8, 10], 13, rng.standard_normal((2, 4, 4, 5)).astype(np.float32))
    single(a, "space_to_depth", [helper.make_node("SpaceToDepth", ["image"], ["logits"], blocksize=2)], {}, [2, 12, 2, 3],
           13, rng.standard_normal((2, 3, 4, 6)).astype(np.float32))
    for axis in (1, -1):
        single(a, "hardmax_%d" % axis, [helper.make_node("Hardmax", ["image"], ["logits"], axis=axis)], {}, [2, 3, 4, 5], 13, ties)
    idx = rng.integers(-4, 4, (2, 3, 4, 5)).astype(np.int64)
    single(a, "gather_elements", [helper.make_node("GatherElements", ["image", "idx"], ["logits"], axis=2)], {"idx": idx},
           [2, 3, 4, 5], 13, x)
    (y, _, _), _ = single(a, "one_hot", [helper.make_node("ArgMax", ["image"], ["am"], axis=1, keepdims=0),
                                          helper.make_node("OneHot", ["am", "depth", "vals"], ["logits"], axis=1)],
                          {"depth": np.array([3], np.int64), "vals": np.array([-1.0, 2.5], np.float32)}, [2, 3, 4, 5], 13, x)
    check(set(np.unique(y)) <= {-1.0, 2.5}, "OneHot writes only its off/on values")
    single(a, "mod_fmod", [helper.make_node("Mod", ["image", "d"], ["logits"], fmod=1)],
           {"d": np.array([0.7, -0.3, 1.1, -2.0, 0.5], np.float32)}, [2, 3, 4, 5], 13, x * 3)
    single(a, "cumsum_exclusive_reverse", [helper.make_node("CumSum", ["image", "ax"], ["logits"], exclusive=1, reverse=1)],
           {"ax": np.array(-1, np.int64)}, [2, 3, 4, 5], 13, x)
    single(a, "log_softmax_11", [helper.make_node("LogSoftmax", ["image"], ["logits"], axis=1)], {}, [2, 3, 4, 5], 11, x)
    # TopK with sorted = 0: the spec leaves the order open; a graph reading the values by
    # position must still give ORT's answer. ORT's order depends on k and the axis length (the
    # best for k = 1, a heap for small k, nth_element's arrangement otherwise): cases of each,
    # with ties, smallest and largest, over the last axis and over axis 0 of [len, 3].
    for n, k, largest, axis in ((6, 3, 1, 1), (10, 1, 1, 1), (10, 8, 1, 1), (20, 7, 0, 1), (200, 50, 1, 1),
                                (200, 150, 1, 1), (37, 30, 0, 1), (33, 5, 1, 0), (33, 31, 0, 0)):
        xin = np.round(rng.standard_normal((2, n) if axis == 1 else (n, 3)) * 3).astype(np.float32)  # ties
        out_shape = [2, k] if axis == 1 else [k, 3]
        for what, pick in (("values", lambda v, i: [v]), ("indices", lambda v, i: [i])):
            node = helper.make_node("TopK", ["image", "k"], ["v", "i"], axis=axis, largest=largest, sorted=0)
            ident = helper.make_node("Identity", pick("v", "i"), ["logits"])
            single(a, "topk_unsorted_%d_%d_%d_%d_%s" % (n, k, largest, axis, what), [node, ident],
                   {"k": np.array([k], np.int64)}, out_shape, 13, xin,
                   out_type=TensorProto.FLOAT if what == "values" else TensorProto.INT64, tol=0)


def caffe_alexnet(a):
    """LRN (local response normalisation), as AlexNet and GoogLeNet converted from Caffe have it
    (the ONNX model zoo's bvlc_* files): single LRNs with odd sizes and other alpha, beta, bias
    against ORT, an even size (which ORT refuses) against the ONNX formula; then a small AlexNet-shaped net at opset 9 (Conv with group 2,
    Relu, LRN, MaxPool, Gemm with transB, Dropout, Softmax) against ORT."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 7, 5, 6)).astype(np.float32) * 3
    for size, alpha, beta, bias in ((5, 1e-4, 0.75, 1.0), (3, 2e-2, 0.5, 2.0), (1, 0.5, 0.75, 1.0), (9, 1e-3, 1.0, 0.5)):
        single(a, "lrn_%d" % size, [helper.make_node("LRN", ["image"], ["logits"], size=size, alpha=alpha, beta=beta,
                                                     bias=bias)], {}, [2, 7, 5, 6], 13, x)
    # An even size, which ONNX defines (one more channel after than before) and ORT refuses:
    # against the spec's formula in numpy.
    g = helper.make_graph([helper.make_node("LRN", ["image"], ["logits"], size=4, alpha=2e-2, beta=0.5, bias=2.0)], "lrn4",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(x.shape))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = os.path.join(a.work_dir, "lrn_4.onnx")
    onnx.save(m, path)
    np.save(os.path.join(a.work_dir, "lrn_4_x.npy"), x)
    run_sluice(a, "run", path, "-i", "image=" + os.path.join(a.work_dir, "lrn_4_x.npy"), "-o", os.path.join(a.work_dir, "lrn_4"))
    y = np.load(os.path.join(a.work_dir, "lrn_4", "logits.npy"))
    sq = np.zeros_like(x, dtype=np.float64)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - 1), min(x.shape[1] - 1, c + 2)  # floor(3/2) before, ceil(3/2) after
        sq[:, c] = (x[:, lo:hi + 1].astype(np.float64) ** 2).sum(axis=1)
    want = x / (2.0 + 2e-2 / 4 * sq) ** 0.5
    check(np.abs(y - want).max() <= 1e-5 * np.abs(want).max(), "LRN size 4 (even) against the ONNX formula: %.2g" %
          np.abs(y - want).max())
    w1 = (rng.standard_normal((16, 3, 5, 5)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((24, 8, 3, 3)) * 0.2).astype(np.float32)
    fc = (rng.standard_normal((10, 24 * 3 * 3)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], kernel_shape=[5, 5], strides=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("LRN", ["r1"], ["n1"], size=5, alpha=1e-4, beta=0.75),
        helper.make_node("MaxPool", ["n1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("LRN", ["r2"], ["n2"], size=5, alpha=1e-4, beta=0.75),
        helper.make_node("MaxPool", ["n2"], ["p2"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["g"], transB=1),
        helper.make_node("Dropout", ["g"], ["d"], ratio=0.5),
        helper.make_node("Softmax", ["d"], ["logits"], axis=1),
    ]
    inits = {"w1": w1, "b1": rng.standard_normal(16).astype(np.float32) * 0.1, "w2": w2,
             "b2": rng.standard_normal(24).astype(np.float32) * 0.1, "fc": fc,
             "fb": rng.standard_normal(10).astype(np.float32) * 0.1}
    (y, _, _), path = single(a, "caffe_alexnet_op9", nodes, inits, [2, 10], 9,
                             rng.standard_normal((2, 3, 31, 31)).astype(np.float32))
    check(np.allclose(y.sum(axis=1), 1, atol=1e-5), "the AlexNet-shaped net's softmax rows sum to 1")
    text = run_sluice(a, "inspect", path).stdout
    check(text.count("LRN '") == 2, "both LRNs in the plan")


def lp_pools(a):
    """LpPool and GlobalLpPool (p = 1, 2, 3): windows with strides and pads (padding adds
    nothing), a 1-D LpPool (run as 2-D), against ORT, at opset 11 (the ONNX checker of Debian's onnx
    does not know opset 18's ceil_mode and dilations for LpPool yet, and says so)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    for order in (1, 2, 3):
        single(a, "lp_pool_p%d" % order, [helper.make_node("LpPool", ["image"], ["logits"], kernel_shape=[3, 2],
                                                           strides=[2, 2], pads=[1, 0, 1, 1], p=order)],
               {}, [2, 3, 5, 5], 11, x)
        single(a, "global_lp_pool_p%d" % order, [helper.make_node("GlobalLpPool", ["image"], ["logits"], p=order)], {},
               [2, 3, 1, 1], 11, x)
    single(a, "lp_pool_1d", [helper.make_node("LpPool", ["image"], ["logits"], kernel_shape=[3], strides=[2], pads=[1, 1],
                                              p=2)], {}, [2, 3, 5], 11, rng.standard_normal((2, 3, 9)).astype(np.float32))


def edge_values(a):
    """Values at the edges of the new ops: LogSumExp of large magnitudes (max subtracted) and of
    integers, noop_with_empty_axes on the new reductions, INT64_MIN % -1, ConvTranspose output
    shapes two or three past the kernel's reach (the extra entries at the end, as ORT), and NaN
    in ArgMax, Hardmax and GlobalMaxPool (as ORT: a NaN after the first entry is passed over)."""
    big = np.array([[1000., 1000.], [-1000., -1000.], [1., 2.]], np.float32)
    single(a, "logsumexp_big", [helper.make_node("ReduceLogSumExp", ["image"], ["logits"], axes=[1], keepdims=0)], {},
           [3], 13, big)
    for op in ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"):
        x = np.abs(np.random.default_rng(9).standard_normal((2, 3)).astype(np.float32)) + 0.5
        x[0, 1] = -x[0, 1] if op != "ReduceLogSum" else x[0, 1]
        single(a, "noop_" + op.lower(), [helper.make_node(op, ["image", "axes"], ["logits"], noop_with_empty_axes=1)],
               {"axes": np.array([], np.int64)}, [2, 3], 18, x)
    for name, auto_pad, out_shape, width in (("notset_3", "NOTSET", [3], 1), ("same_upper_2", "SAME_UPPER", [2], 1)):
        node = helper.make_node("ConvTranspose", ["image", "w", "b"], ["logits"], output_shape=out_shape, auto_pad=auto_pad)
        single(a, "convtranspose_oshape_" + name, [node], {"w": np.ones((1, 1, 1), np.float32), "b": np.array([0.5], np.float32)},
               [1, 1, out_shape[0]], 13, np.full((1, 1, width), 10., np.float32))
    x = np.array([[1, np.nan, 3, 2], [np.nan, 5, 1, 0]], np.float32)
    single(a, "argmax_nan", [helper.make_node("ArgMax", ["image"], ["logits"], axis=1, keepdims=0)], {}, [2], 13, x,
           out_type=TensorProto.INT64, tol=0)
    single(a, "hardmax_nan", [helper.make_node("Hardmax", ["image"], ["logits"], axis=1)], {}, [2, 4], 13, x)
    single(a, "global_max_pool_nan", [helper.make_node("GlobalMaxPool", ["image"], ["logits"])], {}, [1, 2, 1, 1], 13,
           x.reshape(1, 2, 2, 2))


def int_edges(a):
    """Integer inputs, which the float image input cannot carry: Mod of INT64_MIN by -1 (0, not
    a trap) and an integer ReduceLogSumExp (summed as exp in double, not truncated first)."""
    import onnxruntime as ort

    from e2e_util import run_sluice
    cases = [("mod_min", [helper.make_node("Mod", ["v", "d"], ["y"])], {"d": np.array([-1, 3], np.int64)},
              np.array([np.iinfo(np.int64).min, -7], np.int64), [2]),
             ("logsumexp_int", [helper.make_node("ReduceLogSumExp", ["v"], ["y"], axes=[0], keepdims=0)], {},
              np.array([-3, -4, -5], np.int64), [])]
    for name, nodes, inits, v, out_shape in cases:
        y, _ = run_model(a, name, nodes, inits, v, "v", "y", TensorProto.INT64, out_shape)
        path = os.path.join(a.work_dir, name + ".onnx")
        want = {"mod_min": np.array([0, 2], np.int64), "logsumexp_int": np.array(-3, np.int64)}[name]
        check(np.array_equal(y, want), "%s: %s (expected %s)" % (name, y.tolist(), want.tolist()))
        if name == "logsumexp_int":  # ORT agrees; its Mod of INT64_MIN by -1 traps like C's %
            ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"v": v})[0]
            check(np.array_equal(y, ref), "%s: equals ORT's %s" % (name, ref.tolist()))
    # Div of INT_MIN by -1 overflows; the CPU traps on it (SIGFPE: the process died with no
    # message, at load when both are constants, found by a probe). A clear error instead, at run
    # time and when folded at load; int32 and int64.
    for dt, np_t in ((TensorProto.INT64, np.int64), (TensorProto.INT32, np.int32)):
        low = np.array([np.iinfo(np_t).min], np_t)
        for folded in (False, True):
            name = "div_min_%s%s" % (np_t.__name__, "_folded" if folded else "")
            inits = {"d": np.array([-1], np_t), **({"v": low} if folded else {})}
            _, r = run_model(a, name, [helper.make_node("Div", ["v", "d"], ["y"], name="divide")], inits,
                             None if folded else low, "v", "y", dt, [1], check_ok=False)
            check(r.returncode == 1 and "'divide'" in r.stderr and "integer overflow" in r.stderr,
                  "%s: refused with a clear error, no crash (exit %d: %s)" % (name, r.returncode, r.stderr.strip()[:200]))
    # Run-time refusals name the file as load-time ones do (an integer division by zero and a
    # GatherElements index out of range named only their node).
    zero = np.array([0], np.int64)
    _, r = run_model(a, "div_zero", [helper.make_node("Div", ["v", "d"], ["y"], name="divide")], {"d": zero},
                     np.array([5], np.int64), "v", "y", TensorProto.INT64, [1], check_ok=False)
    path = os.path.join(a.work_dir, "div_zero.onnx")
    check(r.returncode == 1 and path + ": node 'divide'" in r.stderr and "division by zero" in r.stderr,
          "div_zero: the error names the file and the node (exit %d: %s)" % (r.returncode, r.stderr.strip()[:200]))
    _, r = run_model(a, "gather_elements_range", [helper.make_node("GatherElements", ["v", "i"], ["y"], name="ge")],
                     {"v": np.arange(4, dtype=np.float32)}, np.array([4], np.int64), "i", "y", TensorProto.INT64, [1],
                     check_ok=False, out_elem=TensorProto.FLOAT)
    path = os.path.join(a.work_dir, "gather_elements_range.onnx")
    check(r.returncode == 1 and path + ": node 'ge'" in r.stderr and "out of range" in r.stderr,
          "gather_elements_range: the error names the file and the node (exit %d: %s)" % (r.returncode, r.stderr.strip()[:200]))


def refuse(a, name, node, in_shape, opset, expect, what, inits=None, out_type=TensorProto.FLOAT):
    """Writes a one-node model and checks that `sluice bench` refuses it, naming the file and `expect`."""
    g = helper.make_graph([node], name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("logits", out_type, None)],
                          [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 13 else 8
    path = os.path.join(a.work_dir, "bad_" + name + ".onnx")
    onnx.save(m, path)
    expect_refusal(a, path, expect, what)


def einsums(a):
    """Einsum: explicit and implicit equations, a diagonal, a transpose, a full sum, three
    operands, attention's 'bhqd,bhkd->bhqk', a predictor ('nc,cd->nd', run as a MatMul) and a
    per-channel scale ('nchw,nc->nchw', run as a Mul), ellipses (broadcast where an operand's axis is
    1, first in an implicit output); refused: a '.' that is no ellipsis, a term of the wrong length,
    a letter of two sizes."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    m = rng.standard_normal((2, 3)).astype(np.float32)
    cases = [("nchw,nc->nchw", {"m": m}, [2, 3, 4, 5]), ("nchw,nc", {"m": m}, [2, 4, 5]),
             ("nchw->nhwc", {}, [2, 4, 5, 3]), ("nchw->", {}, []), ("nchw,nchw,nc->nc", {"x2": x, "m": m}, [2, 3]),
             ("nchw,wv->nchv", {"w": rng.standard_normal((5, 6)).astype(np.float32)}, [2, 3, 4, 6]),
             ("nchw,nckw->nchk", {"k": rng.standard_normal((2, 3, 7, 5)).astype(np.float32)}, [2, 3, 4, 7]),
             ("nchh->nch", {}, None), ("...hw,wv->...hv", {"w": rng.standard_normal((5, 6)).astype(np.float32)}, None),
             ("...w,...w", {"b": rng.standard_normal((2, 3, 4, 5)).astype(np.float32)}, None),
             ("nc...,nc->n...", {"m": m}, None), ("...ii->...i", {}, None)]
    for k, (eq, inits, shape) in enumerate(cases):
        xin = rng.standard_normal((2, 3, 4, 4)).astype(np.float32) if "hh" in eq or "ii" in eq else x
        single(a, "einsum_%d" % k, [helper.make_node("Einsum", ["image", *inits], ["logits"], equation=eq)], inits,
               shape, 12, xin)
    # Ellipses of different ranks, broadcast where one has 1 (ORT 1.20 refuses these): numpy's answer.
    b = rng.standard_normal((3, 1, 5)).astype(np.float32)
    for k, eq in enumerate(("...w,...w->...", "...w,...w")):
        y, _ = run_model(a, "einsum_broadcast_%d" % k, [helper.make_node("Einsum", ["image", "b"], ["logits"], equation=eq)],
                         {"b": b}, x)
        want = np.einsum(eq, x.astype(np.float64), b.astype(np.float64))
        check(y is not None and y.shape == want.shape and np.allclose(y, want, atol=1e-5),
              "einsum_broadcast_%d: %r broadcasts as numpy does (%s)" % (k, eq, None if y is None else y.shape))
    # An ellipsis axis of 1 against one of 0: empty (it gave a [1, 3] of garbage; a review's find).
    y, _ = run_model(a, "einsum_broadcast_empty", [helper.make_node("Einsum", ["image", "b"], ["logits"], equation="...i,...i->...i")],
                     {"b": np.ones((1, 3), np.float32)}, np.zeros((0, 3), np.float32))
    check(y is not None and y.shape == (0, 3), "einsum_broadcast_empty: [0, 3] against [1, 3] is [0, 3] (%s)" % (
        None if y is None else y.shape,))
    # A predictor and a gate-like product: lowered to MatMul and Mul (what the fast kernels run).
    p = rng.standard_normal((3, 6)).astype(np.float32)
    _, path = single(a, "einsum_predictor", [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0),
                                              helper.make_node("Einsum", ["mean", "p"], ["logits"], equation="nc,cd->nd")],
                     {"p": p}, [2, 6], 13, x)
    insp = run_sluice(a, "inspect", path).stdout
    ops = [line.split()[0] for line in insp.splitlines() if line.startswith("  ") and line.split()]
    check(("MatMul" in ops or "Gemm" in ops) and "Einsum" not in ops,
          "einsum_predictor: 'nc,cd->nd' runs as a MatMul or Gemm (%s)" % ops)
    for name, eq, shape, what in (("einsum_dots", "..ij->ji", [2, 3, 4, 5], "not one ellipsis"),
                                  # (summing the ellipsis's axes unasked: lowered to MatMul it read past
                                  # a broadcast operand; numpy and ORT refuse it)
                                  ("einsum_ellipsis_dropped", "n...->n", [2, 3, 4, 5], "the output has no '...'"),
                                  ("einsum_term_length", "nch->nc", [2, 3, 4, 5], "term 'nch' has 3 letter(s)"),
                                  ("einsum_two_sizes", "nchh->n", [2, 3, 4, 5], "letter 'h' is 4 in one place and 5")):
        refuse(a, name, helper.make_node("Einsum", ["image"], ["logits"], equation=eq), shape, 12, what,
               "an invalid Einsum")


def padded_average_pool(a):
    """avg_pool2d(count_include_pad=True) with padding, which torch exports as Pad + AveragePool,
    and a zero Pad before a max pool: Sluice against torch itself, and against ORT with its graph
    optimisations off (ORT 1.20's PadFusion drops count_include_pad and pads the max pool with
    -inf: run_vs_ort turns them off for such files)."""
    import torch
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)

    path = export(a, Net(), "avg_pool_pad", (1, 2, 6, 5))
    expect_ops(path, {"Pad", "AveragePool"})
    x = np.random.default_rng(12).standard_normal((1, 2, 6, 5)).astype(np.float32)
    y, _, _ = run_vs_ort(a, path, x, "avg_pool_pad")
    want = Net()(torch.from_numpy(x)).numpy()
    check(np.abs(y - want).max() < 1e-5, "avg_pool_pad: equals torch's avg_pool2d (max |diff| %.2g)" % np.abs(y - want).max())

    class ZeroPadMax(torch.nn.Module):  # zero padding, then a max pool: a window of negatives sees the 0
        def forward(self, x):
            return F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 1)

    path = export(a, ZeroPadMax(), "max_pool_zero_pad", (1, 2, 6, 5))
    expect_ops(path, {"Pad", "MaxPool"})
    x = -np.abs(x)  # every window's max is then the padding's 0 at the border
    y, _, _ = run_vs_ort(a, path, x, "max_pool_zero_pad")
    want = ZeroPadMax()(torch.from_numpy(x)).numpy()
    check(np.abs(y - want).max() < 1e-5, "max_pool_zero_pad: equals torch's (max |diff| %.2g)" % np.abs(y - want).max())


def ceil_mode_small_maps(a):
    """ceil_mode pools whose one window hangs over the end of a padded input smaller than it
    (a 1-pixel map under a 2x2 stride-2 pool): one output, as ONNX's formula, ORT and PyTorch
    give (it was refused as a window larger than the input). Against ORT, and against PyTorch
    for count_include_pad=1, where ORT divides an overhanging window differently."""
    import torch
    import torch.nn.functional as F

    for i, (h, w, k, s, p) in enumerate(((1, 1, 2, 2, 0), (1, 3, 2, 2, 0), (3, 2, 4, 3, 0), (2, 5, 5, 4, 1))):
        x = np.random.default_rng(30 + i).standard_normal((2, 3, h, w)).astype(np.float32)
        shape = "%dx%d_k%d_s%d_p%d" % (h, w, k, s, p)
        for op, cip in (("MaxPool", None), ("AveragePool", 0), ("AveragePool", 1)):
            attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=1)
            if cip is not None:
                attrs["count_include_pad"] = cip
            name = "ceil_%s%s_%s" % (op.lower(), "" if cip is None else "_cip%d" % cip, shape)
            nodes = [helper.make_node(op, ["image"], ["logits"], **attrs)]
            if cip == 1:  # against PyTorch
                g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(x.shape))],
                                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
                m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
                m.ir_version = 8
                path = os.path.join(a.work_dir, name + ".onnx")
                onnx.save(m, path)
                xin, out = os.path.join(a.work_dir, name + "_x.npy"), os.path.join(a.work_dir, name + "_out")
                np.save(xin, x)
                run_sluice(a, "run", path, "--input", "image=" + xin, "--output-dir", out)
                y = np.load(os.path.join(out, "logits.npy"))
                want = F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=True, count_include_pad=True).numpy()
                check(y.shape == want.shape and np.abs(y - want).max() < 1e-5, "%s: equals PyTorch's" % name)
            else:
                single(a, name, nodes, {}, None, 13, x)

    # Behind a conv, where the pools run on the NHWC kernel: against PyTorch.
    class ConvPool(torch.nn.Module):
        def __init__(self, avg, cip):
            super().__init__()
            self.conv, self.avg, self.cip = torch.nn.Conv2d(3, 16, 3, 1, 1), avg, cip

        def forward(self, x):
            y = F.relu(self.conv(x))
            return F.avg_pool2d(y, 3, 2, 0, ceil_mode=True, count_include_pad=self.cip) if self.avg else \
                F.max_pool2d(y, 3, 2, 0, ceil_mode=True)

    for avg, cip in ((False, False), (True, False), (True, True)):
        torch.manual_seed(3)
        net = ConvPool(avg, cip).eval()
        name = "ceil_after_conv_%s%s" % ("avg" if avg else "max", "_cip" if cip else "")
        path = export(a, net, name, (2, 3, 2, 5))
        x = np.random.default_rng(40).standard_normal((2, 3, 2, 5)).astype(np.float32)
        xin, out = os.path.join(a.work_dir, name + "_x.npy"), os.path.join(a.work_dir, name + "_out")
        np.save(xin, x)
        run_sluice(a, "run", path, "--input", "image=" + xin, "--output-dir", out)
        y = np.load(os.path.join(out, "logits.npy"))
        want = net(torch.from_numpy(x)).detach().numpy()
        check(y.shape == want.shape and np.abs(y - want).max() < 1e-5, "%s: equals PyTorch's" % name)


def bad_attributes(a):
    refuse(a, "argmax_axis", helper.make_node("ArgMax", ["image"], ["logits"], axis=2, name="am"), [2, 3], 13, "am",
           "argmax_axis (the error names the node)", out_type=TensorProto.INT64)
    refuse(a, "reduce_l2_axis", helper.make_node("ReduceL2", ["image"], ["logits"], axes=[5], name="rl2"), [2, 3], 13, "rl2",
           "reduce_l2_axis (the error names the node)")
    refuse(a, "convtranspose_output_padding",
           helper.make_node("ConvTranspose", ["image", "w"], ["logits"], strides=[2, 2], output_padding=[3, 3], name="ct"),
           [1, 2, 3, 3], 13, "output_padding", "ConvTranspose output_padding >= stride",
           {"w": np.ones((2, 2, 3, 3), np.float32)})
    refuse(a, "upsample_scale", helper.make_node("Upsample", ["image", "s"], ["logits"], name="up"), [1, 2, 3, 3], 9,
           "must be >= 1", "Upsample with a scale below 1 (ORT refuses it too)", {"s": np.array([1, 1, 0.5, 2], np.float32)})
    # Resize of an empty axis to a non-empty one: nothing to read (it read outside the input).
    refuse(a, "resize_empty_axis", helper.make_node("Resize", ["image", "", "", "sz"], ["logits"], name="rz"), [1, 1, 0, 4],
           13, "nothing to interpolate from", "Resize of an empty axis to 3 entries", {"sz": np.array([1, 1, 3, 4], np.int64)})
    # Sizes that overflow 64 bits: refused by name, not computed wrapped (or crashing ONNX's inference).
    refuse(a, "depth_to_space_blocksize", helper.make_node("DepthToSpace", ["image"], ["logits"], blocksize=2 ** 32, name="d2s"),
           [1, 4, 2, 2], 13, "d2s", "depth_to_space_blocksize overflowing 64 bits")
    refuse(a, "convtranspose_dilation",
           helper.make_node("ConvTranspose", ["image", "w"], ["logits"], dilations=[2 ** 62 + 1, 1], name="ctd"), [1, 1, 3, 3],
           13, "ctd", "convtranspose_dilation overflowing 64 bits", {"w": np.ones((1, 1, 5, 1), np.float32)})

def output_file_names(a):
    """Outputs 'a/b' and 'a_b' both give the file name a_b: each gets a file of its own (the
    second was written over the first), and run says which. Two outputs with names of 300
    characters that differ only at the end (a run once failed on such a name, "File name too
    long") get files of their own, cut and told apart by a hash."""
    long1, long2 = "n" * 299 + "1", "n" * 299 + "2"
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a/b"]), helper.make_node("Neg", ["x"], ["a_b"]),
                           helper.make_node("Abs", ["x"], [long1]), helper.make_node("Sigmoid", ["x"], [long2])], "names",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a/b", "a_b", long1, long2)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path, xin, out = (os.path.join(a.work_dir, f) for f in ("names.onnx", "names_x.npy", "names_out"))
    onnx.save(m, path)
    x = np.random.RandomState(0).randn(1, 2, 4, 4).astype(np.float32)
    np.save(xin, x)
    said = run_sluice(a, "run", path, "--input", "x=" + xin, "--output-dir", out).stdout
    files = sorted(f for f in os.listdir(out) if f.endswith(".npy"))
    check(len(files) == 4 and files[:2] == ["a_b.npy", "a_b_2.npy"] and all(len(f) < 255 for f in files),
          "output_file_names: one file per output, each name short enough (%s)" % [f[:40] for f in files])
    written = [(line.split(" ")[0], os.path.basename(line.split(" -> ")[1])) for line in said.splitlines() if " -> " in line]
    got = {name: np.load(os.path.join(out, f)) for name, f in written}
    check(np.array_equal(got.get("a/b"), np.maximum(x, 0)) and np.array_equal(got.get("a_b"), -x) and
          np.array_equal(got.get(long1), np.abs(x)) and np.allclose(got.get(long2), 1 / (1 + np.exp(-x)), atol=1e-6),
          "output_file_names: each file holds its output, as run printed (%s)" % said.strip()[:300])


def memory_limits(a):
    """Under an address-space limit (`ulimit -v`) below the machine's memory, a value larger
    than what is left under it is refused before allocation, naming the node, the size and the
    limit (it was a bare `std::bad_alloc`, which the C++ API let through instead of a
    sluice::Error)."""
    import resource

    shape = numpy_helper.from_array(np.array([2 ** 31], dtype=np.int64), "shape")
    g = helper.make_graph([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="cos")], "big", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = os.path.join(a.work_dir, "big_constant_of_shape.onnx")
    onnx.save(m, path)
    limit = 6 << 30  # 6 GiB of address space; the value is 8 GiB

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    r = subprocess.run([a.sluice, "run", path, "--output-dir", os.path.join(a.work_dir, "big_out"), "-t", "1"],
                       capture_output=True, text=True, timeout=120, preexec_fn=cap)
    check(r.returncode == 1 and "'cos'" in r.stderr and "8.0 GiB" in r.stderr and "ulimit -v" in r.stderr,
          "memory_limits: an 8 GiB value under a 6 GiB address-space limit is refused by node, size and limit "
          "(exit %d: %s)" % (r.returncode, r.stderr.strip()[:300]))


def cli_usage(a):
    """The CLI as a first-time user types it: `sluice help` prints the help, a mistyped
    subcommand is named with the nearest one (exit 2), `-i` before the model takes one file
    (it took the model path too, then said the model was missing), and `run --top K` prints each
    sample's K best classes."""
    r = run_sluice(a, "help", check_ok=False)
    check(r.returncode == 0 and "Subcommands:" in r.stdout and "run" in r.stdout,
          "cli_usage: `sluice help` prints the help (exit %d)" % r.returncode)
    r = run_sluice(a, "runn", "model.onnx", check_ok=False)
    check(r.returncode == 2 and "unknown subcommand 'runn'" in r.stderr and "did you mean 'run'" in r.stderr,
          "cli_usage: a mistyped subcommand is named, with the nearest (exit %d: %s)" % (r.returncode, r.stderr.strip()))
    model = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "models",
                         "fashion_cnn.onnx")
    r = run_sluice(a, "help", "run", check_ok=False)
    check(r.returncode == 0 and "--top" in r.stdout, "cli_usage: `sluice help run` prints run's help")
    r = run_sluice(a, model, check_ok=False)
    check(r.returncode == 2 and "sluice run " + model in r.stderr,
          "cli_usage: a model path as the first word says how to run it (%s)" % r.stderr.strip())
    r = run_sluice(a, "run", model, "-i", "a.npy", "b.npy", check_ok=False)
    check(r.returncode == 2 and "-i a.npy -i b.npy" in r.stderr,
          "cli_usage: two files after one -i: how to give several (%s)" % r.stderr.strip())
    xin, out = os.path.join(a.work_dir, "cli_x.npy"), os.path.join(a.work_dir, "cli_out")
    np.save(xin, np.zeros((1, 1, 28, 28), np.float32))
    r = run_sluice(a, "run", "-i", "image=" + xin, model, "-o", out, "-t", "1", check_ok=False)
    check(r.returncode == 0 and os.path.exists(os.path.join(out, "logits.npy")),
          "cli_usage: `run -i FILE MODEL` takes one file per -i (exit %d: %s)" % (r.returncode, r.stderr.strip()))
    xs = np.random.default_rng(4).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.save(xin, xs)
    r = run_sluice(a, "run", model, "-i", "image=" + xin, "-o", out, "--top", "3")
    logits = np.load(os.path.join(out, "logits.npy"))
    printed = [[int(p.split(" (")[0]) for p in line.split(":")[1].split(",")]
               for line in r.stdout.splitlines() if line.strip().startswith("sample ")]
    want = [list(np.argsort(-row, kind="stable")[:3]) for row in logits]
    check(printed == want, "cli_usage: --top 3 prints each sample's 3 largest logits (%s, want %s)" % (printed, want))


def no_inputs(a):
    """A model whose graph has no inputs (its values all come from constants) runs without
    --input and gives ORT's answer; a model with an input, run without --input, is refused with
    the input's name and shape."""
    c = numpy_helper.from_array(np.arange(-6, 6, dtype=np.float32).reshape(3, 4), "c")
    g = helper.make_graph([helper.make_node("Relu", ["c"], ["r"]), helper.make_node("ReduceSum", ["r"], ["y"], keepdims=1)],
                          "no_inputs", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [c])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    path, out = os.path.join(a.work_dir, "no_inputs.onnx"), os.path.join(a.work_dir, "no_inputs_out")
    onnx.save(m, path)
    run_sluice(a, "run", path, "--output-dir", out)
    import onnxruntime as ort

    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {})[0]
    got = np.load(os.path.join(out, "y.npy"))
    check(got.shape == want.shape and np.array_equal(got, want), "no_inputs: runs without --input (%s, ORT %s)" % (got, want))
    g1 = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "one_input",
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m1 = helper.make_model(g1, opset_imports=[helper.make_opsetid("", 13)])
    m1.ir_version = 8
    one = os.path.join(a.work_dir, "one_input.onnx")
    onnx.save(m1, one)
    r = run_sluice(a, "run", one, "--output-dir", out, check_ok=False)
    check(r.returncode != 0 and "missing --input" in r.stderr and "'x'" in r.stderr and "[1, 2, 4, 4]" in r.stderr,
          "no_inputs: a model with an input, run without one, is refused by name (%s)" % r.stderr.strip())


def torch_lrn_and_if(a):
    """torch's LocalResponseNorm: its export pools the squared channels with a 3-D AveragePool
    over [N, 1, C, H, W] (run as a 2-D pool over depth) and squeezes behind an If on the shape;
    and x.squeeze(2) of an axis exported as dynamic, an If that each input's shape decides.
    The If's condition is known at load: Sluice takes the branch; both branches are run."""
    import torch
    import torch.nn as nn

    class Lrn(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3, padding=1)
            self.lrn = nn.LocalResponseNorm(size, alpha=1e-2, beta=0.75, k=2.0)

        def forward(self, x):
            return self.lrn(torch.relu(self.conv(x)))

    x = np.random.default_rng(11).standard_normal((2, 3, 9, 8)).astype(np.float32)
    for size, opset in ((3, 11), (2, 13), (5, 17)):
        torch.manual_seed(size)
        path = export(a, Lrn(size), "lrn_%d_op%d" % (size, opset), (2, 3, 9, 8), opset)
        expect_ops(path, {"If", "AveragePool"})
        run_vs_ort(a, path, x, "lrn_%d_op%d" % (size, opset))

    class Squeeze(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, (1, 3), padding=(0, 1))

        def forward(self, x):
            return torch.relu(self.conv(x)).squeeze(2)

    torch.manual_seed(1)
    path = os.path.join(a.work_dir, "squeeze_dynamic.onnx")
    torch.onnx.export(Squeeze().eval(), torch.randn(1, 3, 1, 6), path, opset_version=13, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {2: "h"}, "logits": {2: "h"}})
    expect_ops(path, {"If"})
    for h in (1, 3):
        y, _, _ = run_vs_ort(a, path, np.random.default_rng(h).standard_normal((1, 3, h, 6)).astype(np.float32),
                             "squeeze_dynamic_h%d" % h)
        check(y.ndim == (3 if h == 1 else 4), "squeeze_dynamic: h=%d gives rank %d" % (h, y.ndim))


if __name__ == "__main__":
    sys.exit(run_parts(__doc__, [mnist_net, elementwise, reductions, image_ops, conv_transpose, resize, single_nodes,
                                 caffe_alexnet, lp_pools, torch_lrn_and_if,
                                 edge_values, int_edges, sums_over_nothing, dropout_masks, declared_output_shapes,
                                 padded_average_pool, ceil_mode_small_maps, bad_attributes, einsums,
                                 output_file_names, no_inputs, memory_limits, cli_usage]))
