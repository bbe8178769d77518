#!/usr/bin/env python3
"""Models at opsets 18 to 21, as newer exporters write them (PyTorch's dynamo exporter defaults
to 18), run by Sluice and by ONNX Runtime on the same file; and the attribute forms of opsets
before 10 that later became inputs.

Debian's PyTorch exports up to opset 17, so the files are made here: committed models and a
torchvision ConvNeXt are restated in the newer opset's forms by `restate` below, and single
nodes are written with onnx.helper. The forms that changed after 17:
  ReduceMean/Max/Min take their axes as an input (18); Split may give num_outputs instead of
  sizes, the last part smaller (18); Pad may pad only the axes an input names (18);
  AveragePool has dilations (19); Gelu is an operator (20).

Checked: outputs equal ORT's; the restated FBS model's gates, the slimmed model's removed
channels and the shift model's shifts are all found again (the same executed MACs and kernels
as the original file); bad newer-opset nodes get errors that name them.

    .venv/bin/python tests/e2e/test_new_opsets.py --sluice build/sluice --work-dir build/e2e_opsets
"""
import copy
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from e2e_util import check, expect_refusal, run_parts, run_sluice, run_vs_ort

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IR_VERSION = {18: 8, 19: 9, 20: 9, 21: 10}  # what onnx writes for each opset


def const_value(g, name):
    """The value of an initializer or Constant node output, else None."""
    for t in g.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def add_init(g, name, values):
    g.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


def fuse_gelu(g):
    """x * 0.5 * (1 + erf(x / sqrt 2)), as PyTorch writes nn.GELU, -> one Gelu node. Returns the count."""
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in g.node for o in n.output}

    def only_consumer(v, op):
        c = consumers.get(v, [])
        return c[0] if len(c) == 1 and c[0].op_type == op else None

    dead, count = set(), 0
    for erf in [n for n in g.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or abs(float(const_value(g, div.input[1])) - 2 ** 0.5) > 1e-5:
            continue
        x = div.input[0]
        add = only_consumer(erf.output[0], "Add")
        mul1 = add and only_consumer(add.output[0], "Mul")
        mul2 = mul1 and only_consumer(mul1.output[0], "Mul")
        if not mul2 or x not in mul1.input or abs(float(const_value(g, [i for i in mul2.input if i != mul1.output[0]][0])) - 0.5) > 1e-7:
            continue
        gelu = helper.make_node("Gelu", [x], [mul2.output[0]], name=erf.name + "_gelu")
        mul2.CopyFrom(gelu)
        dead.update(id(n) for n in (div, erf, add, mul1))
        count += 1
    keep = [n for n in g.node if id(n) not in dead]
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    keep = [n for n in keep if n.op_type != "Constant" or n.output[0] in used]  # the pattern's 1, 0.5 and sqrt 2
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    return count


def restate(model, opset):
    """The model (opset 13 to 17, as torch 1.13 exports) in opset `opset`'s forms. Returns
    (model, {form: count}) so the caller can check the forms it meant to test are there."""
    m = copy.deepcopy(model)
    g = m.graph
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    m.ir_version = IR_VERSION[opset]
    forms = {"reduce_axes_input": 0, "split_num_outputs": 0, "pad_axes": 0, "gelu": 0}
    for i, n in enumerate(g.node):
        if n.op_type in ("ReduceMean", "ReduceMax", "ReduceMin"):
            axes = [a for a in n.attribute if a.name == "axes"]
            if axes:
                n.input.append(add_init(g, "restated_axes_%d" % i, list(axes[0].ints)))
                n.attribute.remove(axes[0])
                forms["reduce_axes_input"] += 1
        elif n.op_type == "Split" and len(n.input) > 1:
            sizes = const_value(g, n.input[1])
            if sizes is not None and len(set(sizes[:-1].tolist())) <= 1 and sizes[-1] <= sizes[0]:
                del n.input[1:]
                n.attribute.append(helper.make_attribute("num_outputs", len(n.output)))
                forms["split_num_outputs"] += 1
        elif n.op_type == "Pad" and len(n.input) > 1:
            pads = const_value(g, n.input[1])
            if pads is not None:
                r = len(pads) // 2
                axes = [d for d in range(r) if pads[d] or pads[d + r]]
                n.input[1] = add_init(g, "restated_pads_%d" % i, [pads[d] for d in axes] + [pads[d + r] for d in axes])
                while len(n.input) < 3:
                    n.input.append("")
                n.input.append(add_init(g, "restated_pad_axes_%d" % i, [d - r for d in axes]))  # negative axes
                forms["pad_axes"] += 1
    if opset >= 20:
        forms["gelu"] = fuse_gelu(g)
    return m, forms


def save(m, path):
    onnx.save(m, path)
    return path


def stats_and_structure(a, path, x, tag):
    """Runs against ORT; returns (the run's stats, what `inspect` found: the gate, shift and
    removed-channel counts and every node's op and channel counts)."""
    _, _, st = run_vs_ort(a, path, x, tag)
    insp = json.loads(run_sluice(a, "inspect", path, "--json", "-t", "1", "--shape", "image=" + "x".join(map(str, x.shape))).stdout)
    found = {k: insp[k] for k in ("gates_recognised", "shifts_recognised", "channels_removed")}
    found["nodes"] = sorted((n["op"], n.get("in_channels", -1), n.get("out_channels", -1)) for n in insp["nodes"])
    return st, found


def committed_models(a):
    """The committed FBS, slimmed and shift models, restated at each newer opset: the same
    outputs, and everything found again that the opset-13 file has."""
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    for rel, opset, form in [("models/fbs/mcifar_fbs_d50.onnx", 18, "reduce_axes_input"),
                             ("models/slim/mcifar_slim_p70.onnx", 19, None),
                             ("models/shift/shiftresnet_conv.onnx", 21, None),
                             ("models/shift/shiftresnet_slice.onnx", 20, None)]:
        src = os.path.join(REPO, rel)
        name = os.path.splitext(os.path.basename(rel))[0]
        m, forms = restate(onnx.load(src), opset)
        if form:
            check(forms[form] > 0, "%s opset %d: restated with %s (%d nodes)" % (name, opset, form, forms[form]))
        path = save(m, os.path.join(a.work_dir, "%s_op%d.onnx" % (name, opset)))
        st_old, f_old = stats_and_structure(a, src, x, name + "_op13")
        st_new, f_new = stats_and_structure(a, path, x, "%s_op%d" % (name, opset))
        check(st_new["executed_macs"] == st_old["executed_macs"] and st_new["dense_macs"] == st_old["dense_macs"],
              "%s opset %d: executed/dense MACs %s/%s as at opset 13 (%s/%s)" % (
                  name, opset, st_new["executed_macs"], st_new["dense_macs"], st_old["executed_macs"], st_old["dense_macs"]))
        check(f_new == f_old, "%s opset %d: the same optimised graph as at opset 13 (%d gates, %d shifts, %d channels removed, %d nodes)" % (
            name, opset, f_new["gates_recognised"], f_new["shifts_recognised"], f_new["channels_removed"], len(f_new["nodes"])))


def convnext(a):
    """torchvision ConvNeXt-tiny exported at opset 13 (LayerNorm as ReduceMean, GELU as Erf),
    restated at 20: ReduceMean with an axes input and the Gelu operator."""
    sys.path.insert(0, os.path.join(REPO, "models"))
    import export_torchvision as et

    path13, _ = et.export("convnext_tiny", 64, 13, a.work_dir, verbose=False)
    m, forms = restate(onnx.load(path13), 20)
    check(forms["gelu"] == 18 and forms["reduce_axes_input"] > 0,
          "convnext_tiny opset 20: %d Gelu nodes (18 blocks), %d ReduceMean with axes input" % (forms["gelu"], forms["reduce_axes_input"]))
    path = save(m, os.path.join(a.work_dir, "convnext_tiny_op20.onnx"))
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    run_vs_ort(a, path, x, "convnext_tiny_op20", input_name="input", output_name="output")


def node_model(opset, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = IR_VERSION.get(opset, 10)
    return m


def ir(m, version):
    m.ir_version = version
    return m


def vinfo(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def single_nodes(a):
    """One changed node per model, against ORT."""
    X = vinfo("image", [2, 5, 9, 7])
    cases = {
        # 5 channels in 2 parts: 3 and 2 (only num_outputs can say this without sizes)
        "split_num_outputs_uneven": (18, [helper.make_node("Split", ["image"], ["a", "b"], axis=1, num_outputs=2),
                                          helper.make_node("Concat", ["b", "a"], ["logits"], axis=1)], []),
        "pad_axes_negative": (18, [helper.make_node("Pad", ["image", "pads", "", "axes"], ["logits"])],
                              [i64("pads", [2, -1, 1, 3]), i64("axes", [-1, 1])]),
        "pad_axes_reflect": (19, [helper.make_node("Pad", ["image", "pads", "", "axes"], ["logits"], mode="reflect")],
                             [i64("pads", [1, 2]), i64("axes", [2])]),
        "reduce_max_axes_input": (18, [helper.make_node("ReduceMax", ["image", "ax"], ["logits"], keepdims=0)], [i64("ax", [1, -1])]),
        "reduce_mean_no_axes": (18, [helper.make_node("ReduceMean", ["image"], ["logits"])], []),
        "reduce_min_noop_empty_axes": (18, [helper.make_node("ReduceMin", ["image", "ax"], ["logits"], noop_with_empty_axes=1)],
                                       [i64("ax", [])]),
        "average_pool_dilations": (19, [helper.make_node("AveragePool", ["image"], ["logits"], kernel_shape=[2, 3],
                                                         dilations=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)], []),
        "gelu_erf": (20, [helper.make_node("Gelu", ["image"], ["logits"])], []),
        "gelu_tanh": (21, [helper.make_node("Gelu", ["image"], ["logits"], approximate="tanh")], []),
        # ops added after a reviewer's models used them (the backend test files for Elu,
        # Softplus and Softsign are opset 1/6, below Sluice's 7)
        "elu": (13, [helper.make_node("Elu", ["image"], ["logits"], alpha=0.7)], []),
        "softplus_softsign": (13, [helper.make_node("Softplus", ["image"], ["sp"]),
                                   helper.make_node("Softsign", ["sp"], ["logits"])], []),
        "prelu_per_channel": (13, [helper.make_node("PRelu", ["image", "slope"], ["logits"])],
                              [numpy_helper.from_array(np.linspace(-0.5, 0.5, 5, dtype=np.float32).reshape(5, 1, 1), "slope")]),
        "sin_cos": (13, [helper.make_node("Sin", ["image"], ["s"]), helper.make_node("Cos", ["s"], ["logits"])], []),
    }
    x = (3 * np.random.default_rng(3).standard_normal((2, 5, 9, 7))).astype(np.float32)
    for name, (opset, nodes, inits) in cases.items():
        path = save(node_model(opset, nodes, [X], [vinfo("logits", None)], inits), os.path.join(a.work_dir, name + ".onnx"))
        try:
            run_vs_ort(a, path, x, name, tol=1e-5)
        except AssertionError as e:
            check(False, "%s: %s" % (name, e))


def shift_pad_axes(a):
    """Form B of a shift with opset 18's Pad: half the channels moved right by one column, the
    Pad naming only the width axis. It must still be found as a shift."""
    X = vinfo("image", [1, 8, 10, 10])
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Split", ["r"], ["s0", "s1"], axis=1, num_outputs=2),
             helper.make_node("Pad", ["s1", "pads", "", "axes"], ["p"]),
             helper.make_node("Concat", ["s0", "p"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w2"], ["logits"])]
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((5, 8, 1, 1)).astype(np.float32), "w2"),
             i64("pads", [1, -1]), i64("axes", [3])]
    path = save(node_model(18, nodes, [X], [vinfo("logits", None)], inits), os.path.join(a.work_dir, "shift_pad_axes.onnx"))
    run_vs_ort(a, path, rng.standard_normal((1, 8, 10, 10)).astype(np.float32), "shift_pad_axes")
    insp = json.loads(run_sluice(a, "inspect", path, "--json").stdout)
    ops = [n["op"] for n in insp["nodes"]]
    check("Pad" not in ops and any("Shift" in o or "shift" in str(n.get("kernel", "")) for o, n in zip(ops, insp["nodes"])),
          "shift_pad_axes: the Pad + Split + Concat is run as a shift (ops %s)" % ops)


def older_forms(a):
    """Opsets before 10 and 11 gave Slice's bounds, TopK's k and Pad's amounts as attributes; and
    newer onnx writes IR 10 whatever the opset. Both run, against ORT."""
    X = vinfo("image", [2, 5, 9, 7])
    x = np.random.default_rng(8).standard_normal((2, 5, 9, 7)).astype(np.float32)
    cases = {
        "slice_attributes_opset9": (9, [helper.make_node("Slice", ["image"], ["logits"], starts=[1, -4], ends=[4, 100], axes=[1, 3])]),
        "pad_attributes_opset9": (9, [helper.make_node("Pad", ["image"], ["logits"], pads=[0, 1, 2, 0, 0, 2, 1, 3], value=1.5)]),
        "topk_attribute_opset9": (9, [helper.make_node("TopK", ["image"], ["logits", "idx"], k=3)]),
        "ir10_opset13": (13, [helper.make_node("Relu", ["image"], ["logits"])]),
    }
    for name, (opset, nodes) in cases.items():
        m = node_model(opset, nodes, [X], [vinfo("logits", None)])
        m.ir_version = 10 if name == "ir10_opset13" else 4
        path = save(m, os.path.join(a.work_dir, name + ".onnx"))
        try:
            run_vs_ort(a, path, x, name, tol=1e-6)
        except AssertionError as e:
            check(False, "%s: %s" % (name, e))


def bad_nodes(a):
    """Newer-opset nodes that are wrong, and an opset Sluice does not know: a clear error naming
    the node or the opset, never a crash or an answer."""
    X = vinfo("image", [2, 5, 9, 7])
    Y = vinfo("logits", None)
    cases = [
        ("opset_22", node_model(22, [helper.make_node("Relu", ["image"], ["logits"])], [X], [Y]), "opset 22 is newer"),
        ("reduce_axes_attribute_at_18", node_model(18, [helper.make_node("ReduceMean", ["image"], ["logits"], axes=[1], name="rm")], [X], [Y]),
         "'rm' (ReduceMean): attribute 'axes' was replaced by input 'axes' at opset 18"),
        ("split_num_outputs_mismatch", node_model(18, [helper.make_node("Split", ["image"], ["logits"], axis=1, num_outputs=3, name="sp")], [X], [Y]),
         "'sp' (Split): num_outputs is 3 but the node has 1 outputs"),
        ("pad_axes_twice", node_model(18, [helper.make_node("Pad", ["image", "pads", "", "axes"], ["logits"], name="pd")], [X], [Y],
                                      [i64("pads", [1, 1, 1, 1]), i64("axes", [3, -1])]), "'pd' (Pad): axes names axis 3 twice"),
        ("pad_axes_count", node_model(18, [helper.make_node("Pad", ["image", "pads", "", "axes"], ["logits"], name="pd")], [X], [Y],
                                      [i64("pads", [1, 1, 1]), i64("axes", [3])]), "'pd' (Pad): pads has 3 values for 1 axes"),
        ("pad_wrap", node_model(19, [helper.make_node("Pad", ["image", "pads"], ["logits"], mode="wrap", name="pd")], [X], [Y],
                                [i64("pads", [0] * 8)]), "pad mode 'wrap' is not supported"),
        ("gelu_before_opset_20", node_model(19, [helper.make_node("Gelu", ["image"], ["logits"], name="ge")], [X], [Y]),
         "'ge' (Gelu): Gelu is an operator from opset 20, the model imports opset 19"),
        ("ir_version_11", ir(node_model(21, [helper.make_node("Relu", ["image"], ["logits"])], [X], [Y]), 11), "IR version 11 is newer"),
        ("split_num_outputs_empty_part", node_model(18, [helper.make_node("Split", ["image"], ["a", "b", "c", "logits"], axis=1,
                                                                          num_outputs=4, name="sp")], [X], [Y]),
         "'sp' (Split): num_outputs 4 in parts of 2 leaves the last part of axis size 5 empty"),
        ("split_uneven_at_13", ir(node_model(13, [helper.make_node("Split", ["image"], ["a", "logits"], axis=1, name="sp")], [X], [Y]), 7),
         "'sp' (Split): axis size 5 does not split into 2 equal parts"),
        ("reduce_axes_float", node_model(18, [helper.make_node("ReduceMax", ["image", "ax"], ["logits"], name="rm")], [X], [Y],
                                         [numpy_helper.from_array(np.array([1.0], np.float32), "ax")]),
         "'rm' (ReduceMax): input 1 ('ax', the axes) must be a 1-D int64 or int32 tensor, got float32"),
        ("output_dtype_mismatch", node_model(19, [helper.make_node("Cast", ["image"], ["logits"], to=TensorProto.INT64, name="c")],
                                             [X], [vinfo("logits", [2, 5, 9, 7])]),
         "'c' (Cast): graph output 'logits' is declared float32 in the model, but this node computes int64"),
        ("gelu_bad_approximate", node_model(20, [helper.make_node("Gelu", ["image"], ["logits"], approximate="fast", name="ge")], [X], [Y]),
         "'ge' (Gelu): approximate must be 'none' or 'tanh'"),
    ]
    for name, m, expect in cases:
        path = save(m, os.path.join(a.work_dir, "bad_" + name + ".onnx"))
        expect_refusal(a, path, expect, name)


if __name__ == "__main__":
    sys.exit(run_parts(__doc__, (single_nodes, older_forms, bad_nodes, shift_pad_axes, committed_models, convnext)))
