#!/usr/bin/env python3
"""Models from PyTorch's dynamo exporter (tests/e2e/dynamo/*.onnx, written by make_fixtures.py
there with torch 2.5: local functions, CastLike, no-op Slices, MaxPool's unused Indices), and
hand-written local functions, run by Sluice and by ONNX Runtime on the same file.

Checked: outputs equal ORT's; every gate, shift and zeroed BN channel that the PyTorch net has
(expected.json, counted from its modules) is found; gated runs execute fewer MACs than dense and
`--gating off` gives the same outputs; function calls bind inputs, outputs and attributes
(given, defaulted, absent) as ONNX says; bad calls get errors that name them.

    .venv/bin/python tests/e2e/test_dynamo_exports.py --sluice build/sluice --work-dir build/e2e_dynamo
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from e2e_util import check, expect_refusal, run_parts, run_sluice, run_vs_ort

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "dynamo")


def fixtures(a):
    with open(os.path.join(FIXTURES, "expected.json")) as f:
        expected = json.load(f)
    for name, exp in sorted(expected.items()):
        path = os.path.join(FIXTURES, name + ".onnx")
        x = np.random.default_rng(5).standard_normal(exp["input_shape"]).astype(np.float32)
        y, _, st = run_vs_ort(a, path, x, name)
        shape = "image=" + "x".join(map(str, exp["input_shape"]))
        insp = json.loads(run_sluice(a, "inspect", path, "--json", "--shape", shape).stdout)
        bn = insp["inlined_calls"].get("pkg.onnxscript.torch_lib._aten_native_batch_norm_inference_onnx", 0)
        check(bn > 0, "%s: its BatchNorm function calls inlined (%d; inspect lists %s)" % (name, bn, insp["inlined_calls"]))
        check(insp["gates_recognised"] == exp["gates"] and insp["shifts_recognised"] == exp["shifts"],
              "%s: %d gates and %d shifts found, the net has %d and %d" % (
                  name, insp["gates_recognised"], insp["shifts_recognised"], exp["gates"], exp["shifts"]))
        if "zeroed_bn_channels" in exp:
            check(insp["channels_removed"] == exp["zeroed_bn_channels"] and st["executed_macs"] < st["dense_macs"],
                  "%s: %d channels removed, %d zeroed in the net; executed %d of %d MACs" % (
                      name, insp["channels_removed"], exp["zeroed_bn_channels"], st["executed_macs"], st["dense_macs"]))
        if exp["gates"]:
            y_off, _, st_off = run_vs_ort(a, path, x, name + "_gating_off", "--gating", "off")
            check(st["executed_macs"] < st_off["executed_macs"] == st_off["dense_macs"] and
                  float(np.abs(y - y_off).max()) <= 1e-4 * max(1.0, float(np.abs(y_off).max())),
                  "%s: gated run executes %d MACs, dense %d, same outputs" % (name, st["executed_macs"], st_off["executed_macs"]))


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_attribute_defaults(fn, defaults):
    """FunctionProto.attribute_proto (field 11, IR 9) is newer than Debian's onnx 1.12 Python
    package: append it to the serialized function, as a newer onnx would write it."""
    raw = fn.SerializeToString()
    for d in defaults:
        b = d.SerializeToString()
        raw += bytes([11 << 3 | 2]) + varint(len(b)) + b
    out = onnx.FunctionProto()
    out.ParseFromString(raw)
    return out


def function_model(nodes, functions, opset=18, inputs=("image",)):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 3, 4, 5]) for i in inputs],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("local", 1)],
                          functions=functions)
    m.ir_version = 8
    return m


def fn(name, inputs, outputs, nodes, attributes=()):
    return helper.make_function("local", name, list(inputs), list(outputs), nodes, [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
                                list(attributes))


def ref_attr(name, ref, kind=onnx.AttributeProto.FLOAT):
    a = onnx.AttributeProto()
    a.name, a.ref_attr_name, a.type = name, ref, kind
    return a


def const_of(ref):
    """A body's Constant k whose value_float is the caller's attribute `ref`."""
    k = helper.make_node("Constant", [], ["k"], name="k_const")
    k.attribute.append(ref_attr("value_float", ref))
    return k


def size_above(x, limit, c="c"):
    """c = numel(x) > limit: a condition known once x's shape is, as an If's that folds at load."""
    return [helper.make_node("Shape", [x], [c + "_s"]), helper.make_node("ReduceProd", [c + "_s"], [c + "_n"], keepdims=0),
            helper.make_node("Constant", [], [c + "_k"], value=numpy_helper.from_array(np.array(limit, np.int64))),
            helper.make_node("Greater", [c + "_n", c + "_k"], [c])]


def if_node(c, out, then_nodes, then_out, else_nodes, else_out):
    """If(c) with the two branches' nodes and their single outputs."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
    return helper.make_node("If", [c], [out], then_branch=helper.make_graph(then_nodes, "then", [], [vi(then_out)]),
                            else_branch=helper.make_graph(else_nodes, "else", [], [vi(else_out)]))


def leaky(name):
    """y = LeakyRelu(x, alpha = the caller's `slope`), and an unused second output that an
    operator Sluice does not have (ReduceL2) computes: dropped as dead, not refused."""
    relu = helper.make_node("LeakyRelu", ["x"], ["y"])
    relu.attribute.append(ref_attr("alpha", "slope"))
    return fn(name, ["x"], ["y", "norm"], [relu, helper.make_node("ReduceL2", ["x"], ["norm"])], ["slope"])


def functions(a):
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 5)).astype(np.float32)
    act = fn("Act", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])])
    branch_leaky = helper.make_node("LeakyRelu", ["x"], ["t"])
    branch_leaky.attribute.append(ref_attr("alpha", "slope"))
    clip = fn("ClipOrNot", ["x", "lo"], ["y"], [helper.make_node("Clip", ["x", "lo"], ["y"])])
    outer = fn("Outer", ["x"], ["y"], [helper.make_node("Leaky", ["x"], ["t", ""], domain="local", slope=0.5),
                                       helper.make_node("Neg", ["t"], ["y"])])
    defaulted = with_attribute_defaults(leaky("LeakyDefault"), [helper.make_attribute("slope", 0.25)])
    cases = {
        # the caller gives the attribute; the second output is not bound (named ""; a call
        # with fewer outputs than the function, which ONNX allows, crashes ORT 1.20)
        "function_attribute_given": ([helper.make_node("Leaky", ["image"], ["logits", ""], domain="local", slope=0.3)], [leaky("Leaky")]),
        # the attribute falls back to the function's default (attribute_proto)
        "function_attribute_default": ([helper.make_node("LeakyDefault", ["image"], ["logits", ""], domain="local")], [defaulted]),
        # neither given nor defaulted: LeakyRelu's own default alpha, 0.01
        "function_attribute_absent": ([helper.make_node("Leaky", ["image"], ["logits", ""], domain="local")], [leaky("Leaky")]),
        # a missing trailing input is absent: Clip without a lower bound
        "function_input_missing": ([helper.make_node("ClipOrNot", ["image"], ["logits"], domain="local")], [clip]),
        # the main graph has a value "f/t" and calls f, whose body makes t: no clash
        "function_names_clash": ([helper.make_node("Sigmoid", ["image"], ["f/t"]),
                                  helper.make_node("F", ["image"], ["o"], domain="local", name="f"),
                                  helper.make_node("Add", ["o", "f/t"], ["logits"])],
                                 [fn("F", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])])]),
        # a function in the default domain named like an operator does not replace it (as in ORT)
        "function_named_like_an_op": ([helper.make_node("Relu", ["image"], ["logits"])],
                                      [helper.make_function("", "Relu", ["x"], ["y"], [helper.make_node("Neg", ["x"], ["y"])],
                                                            [helper.make_opsetid("", 18)])]),
        # the same for an operator newer than ONNX 1.12 knows (Gelu, opset 20)
        "function_named_like_a_newer_op": ([helper.make_node("Gelu", ["image"], ["logits"])],
                                           [helper.make_function("", "Gelu", ["x"], ["y"], [helper.make_node("Neg", ["x"], ["y"])],
                                                                 [helper.make_opsetid("", 20)])], 20),
        # an If in the body whose branches read the function's input x by name, and a main-graph
        # value also named x: the branches read the call's argument, not the graph's x (they read
        # the graph's; found by a review)
        "function_if_reads_its_input": (
            [helper.make_node("Mul", ["image", "image"], ["x"]),
             helper.make_node("Cond", ["image"], ["f"], domain="local"),
             helper.make_node("Add", ["f", "x"], ["logits"])],
            [fn("Cond", ["x"], ["y"], size_above("x", 100) + [
                if_node("c", "y", [helper.make_node("Relu", ["x"], ["t"])], "t", [helper.make_node("Neg", ["x"], ["e"])], "e")])]),
        # an If (its condition known from the input's shape) whose branch calls a model-local
        # function: taken, or not (the untaken branch's call refused the model as an unknown op)
        **{"if_%s_branch_calls_function" % which: (
            size_above("image", limit) + [
                if_node("c", "logits", [helper.make_node("Act", ["image"], ["t"], domain="local")], "t",
                        [helper.make_node("Neg", ["image"], ["e"])], "e")], [act])
          for which, limit in (("taken", 1), ("untaken", 10 ** 9))},
        # a value that only a branch reads (its call's argument): inlining dropped its producer
        # as dead (found by a review)
        "if_branch_reads_outer_value": (
            size_above("image", 1) + [
                helper.make_node("Sigmoid", ["image"], ["sig"]),
                if_node("c", "logits", [helper.make_node("Act", ["sig"], ["t"], domain="local")], "t",
                        [helper.make_node("Neg", ["sig"], ["e"])], "e")], [act]),
        # a function whose body's If defines 't' in its branch, called twice, next to a main-graph
        # 't': the branch's names take the call's prefix (two producers of 't' were refused)
        "function_branch_names_prefixed": (
            [helper.make_node("Relu", ["image"], ["t"]),
             helper.make_node("Branchy", ["image"], ["b1"], domain="local", name="a"),
             helper.make_node("Branchy", ["b1"], ["b2"], domain="local", name="b"),
             helper.make_node("Add", ["b2", "t"], ["logits"])],
            [fn("Branchy", ["x"], ["y"], size_above("x", 1) + [
                if_node("c", "y", [helper.make_node("Tanh", ["x"], ["t"])], "t", [helper.make_node("Neg", ["x"], ["t"])], "t")])]),
        # a body branch's own 'g/y0', prefixed 'f/g/y0', where the body's call named 'g' puts its
        # own y0: the call's prefix steers clear (two producers of 'f/g/y0', found by a review)
        "function_branch_name_meets_call_prefix": (
            [helper.make_node("F2", ["image"], ["logits"], domain="local", name="f")],
            [fn("G2", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y0"]), helper.make_node("Neg", ["y0"], ["y"])]),
             fn("F2", ["x"], ["y"], [helper.make_node("G2", ["x"], ["o"], domain="local", name="g")] + size_above("x", 1) + [
                 if_node("c", "y", [helper.make_node("Sigmoid", ["x"], ["g/y0"]), helper.make_node("Add", ["g/y0", "o"], ["w"])],
                         "w", [helper.make_node("Neg", ["o"], ["w"])], "w")])]),
        # the call's attribute read inside the body's If branch: alpha 0 was taken there (a fuzzer)
        "function_branch_reads_call_attribute": (
            [helper.make_node("LeakyIf", ["image"], ["logits"], domain="local", slope=0.3)],
            [fn("LeakyIf", ["x"], ["y"], size_above("x", 1) + [
                if_node("c", "y", [branch_leaky], "t", [helper.make_node("Neg", ["x"], ["e"])], "e")], ["slope"])]),
        # a function that calls a function, each called twice
        "function_nested": ([helper.make_node("Outer", ["image"], ["o1"], domain="local", name="first"),
                             helper.make_node("Outer", ["o1"], ["logits"], domain="local", name="second")], [outer, leaky("Leaky")]),
    }
    for name, (nodes, fns, *opset) in cases.items():
        path = os.path.join(a.work_dir, name + ".onnx")
        onnx.save(function_model(nodes, fns, *opset), path)
        try:
            run_vs_ort(a, path, x, name, tol=1e-6)
        except AssertionError as e:
            check(False, "%s: %s" % (name, e))

    # A function output that is its input, passed through, next to one the body computes. ORT
    # 1.20 refuses to load this (legal) function, so numpy gives the answer: x - relu(x).
    path = os.path.join(a.work_dir, "function_output_is_input.onnx")
    onnx.save(function_model([helper.make_node("Pass", ["image"], ["a", "b"], domain="local"),
                              helper.make_node("Sub", ["a", "b"], ["logits"])],
                             [fn("Pass", ["x"], ["x", "y"], [helper.make_node("Relu", ["x"], ["y"])])]), path)
    np.save(os.path.join(a.work_dir, "pass_x.npy"), x)
    out = os.path.join(a.work_dir, "pass_out")
    run_sluice(a, "run", path, "--input", "image=" + os.path.join(a.work_dir, "pass_x.npy"), "--output-dir", out)
    y = np.load(os.path.join(out, "logits.npy"))
    check(np.array_equal(y, x - np.maximum(x, 0)), "function_output_is_input: x - relu(x) exactly")

    selfcall = fn("Loopy", ["x"], ["y"], [helper.make_node("Loopy", ["x"], ["y"], domain="local")])
    # L0 calls L1 eight times in a row, L1 calls L2 eight times, ...: 8^7 Relus, not a hang
    chain = [fn("L7", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])])]
    for k in range(6, -1, -1):
        names = ["x"] + ["t%d" % i for i in range(7)] + ["y"]
        chain.append(fn("L%d" % k, ["x"], ["y"], [helper.make_node("L%d" % (k + 1), [names[i]], [names[i + 1]], domain="local")
                                                   for i in range(8)]))
    # L0 calls L1 four times, ..., L15 does nothing: no node is made, but 4^15 calls would be
    empty = [fn("L15", ["x"], [], [])]
    for k in range(14, -1, -1):
        empty.append(fn("L%d" % k, ["x"], [], [helper.make_node("L%d" % (k + 1), ["x"], [], domain="local") for _ in range(4)]))
    bad = {
        "function_calls_nothing_explode": (function_model([helper.make_node("L0", ["image"], [], domain="local", name="c"),
                                                          helper.make_node("Relu", ["image"], ["logits"])], empty),
                                           "node 'c' (call of function 'local.L0'): inlining function calls makes more than"),
        "function_reads_outer_scope": (function_model([helper.make_node("K", ["image"], ["logits"], domain="local", name="c")],
                                                      [fn("K", ["x"], ["y"], [helper.make_node("Add", ["x", "image"], ["y"])])]),
                                       "node 'c' (call of function 'local.K'): the function's body reads 'image', which is neither"),
        "function_calls_itself": (function_model([helper.make_node("Loopy", ["image"], ["logits"], domain="local", name="c")], [selfcall]),
                                  "node 'c' (call of function 'local.Loopy')"),
        "function_too_many_inputs": (function_model([helper.make_node("ClipOrNot", ["image", "image", "image"], ["logits"], domain="local",
                                                                      name="c")], [clip]),
                                     "3 inputs and 1 outputs, but the function takes 2 and gives 1"),
        "function_calls_explode": (function_model([helper.make_node("L0", ["image"], ["logits"], domain="local", name="c")], chain),
                                   "node 'c' (call of function 'local.L0'): inlining function calls makes more than 262144 nodes and calls"),
        # A Constant whose value is the call's attribute, which the call does not give: said so
        # (it was "needs a 'value' attribute", with no word of the attribute; found by a probe).
        "function_constant_attribute_missing": (
            function_model([helper.make_node("Scale", ["image"], ["logits"], domain="local", name="c")],
                           [fn("Scale", ["x"], ["y"], [const_of("alpha"), helper.make_node("Mul", ["x", "k"], ["y"])],
                               ["alpha"])]),
            "the body's Constant 'c/k_const' has no value: its attribute 'value_float' refers to the call's attribute 'alpha', "
            "which the call does not give"),
    }
    for name, (m, expect) in bad.items():
        path = os.path.join(a.work_dir, name + ".onnx")
        onnx.save(m, path)
        expect_refusal(a, path, expect, name)


if __name__ == "__main__":
    sys.exit(run_parts(__doc__, (fixtures, functions)))
