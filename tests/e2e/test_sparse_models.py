#!/usr/bin/env python3
"""Magnitude-pruned (global unstructured L1) torchvision models run by Sluice's sparse kernels
and by ONNX Runtime on the same file: outputs equal, with the sparse kernel forced on every
eligible conv (`--sparse always`) and with the measured choice (`--sparse auto`); executed MACs
equal the count from the file itself (non-zero weights x output pixels for every group-1 conv and
the non-zeros of the Gemm, dense MACs for the depthwise convs); `inspect` names the kernel chosen per conv.
A weight of inf or NaN in a padded conv (sparse, and thin where the direct kernel would run): the
kernels that pad a copy of the input with zeros are not used there (inf x 0 = NaN at the borders,
where ORT skips the padded taps), so the answer is ORT's whatever the options.

    .venv/bin/python tests/e2e/test_sparse_models.py --sluice build/sluice --work-dir build/e2e_sparse
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import check, finish, parse_args, run_sluice, run_vs_ort  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SIZE = 64  # small images keep the test fast; the kernels see the same layer types




def expected_macs(path):
    """(dense, executed) MACs per image from the ONNX file: a group-1 conv runs its non-zero
    weights (the sparse kernel with --sparse always), every other conv and gemm runs dense."""
    m = shape_inference.infer_shapes(onnx.load(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:  # weights the exporter wrote as Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        if n.op_type == "Identity" and n.input[0] in inits:  # the exporter's de-duplicated initializers
            inits[n.output[0]] = inits[n.input[0]]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
              list(m.graph.value_info) + list(m.graph.output)}
    dense = executed = 0
    dead_filters = False
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            group = next((at.i for at in n.attribute if at.name == "group"), 1)
            oh, ow = shapes[n.output[0]][2:]
            d = w.size * oh * ow
            dense += d
            executed += int(np.count_nonzero(w)) * oh * ow if group == 1 else d
            # (a depthwise conv's zero filters go too, with the channels of the conv before it)
            dead_filters |= (group == 1 or w.shape[1] == 1) and bool((np.abs(w.reshape(w.shape[0], -1)).sum(1) == 0).any())
        elif n.op_type == "Gemm":  # the CSR kernel runs the non-zeros
            w = inits[n.input[1]]
            dense += w.size
            executed += int(np.count_nonzero(w))
    return dense, executed, dead_filters


def nonfinite_weights_case(a):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)

    def conv_model(name, convs, size):
        """x -> Conv (pads 1, 3x3) -> ... with the given weights; returns the file's path."""
        nodes, inits, prev = [], [], "image"
        for i, w in enumerate(convs):
            out = "logits" if i == len(convs) - 1 else "h%d" % i
            nodes.append(helper.make_node("Conv", [prev, "w%d" % i], [out], pads=[1, 1, 1, 1]))
            inits.append(numpy_helper.from_array(w, "w%d" % i))
            prev = out
        c = convs[0].shape[1]
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, c, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        path = os.path.join(a.work_dir, name + ".onnx")
        onnx.save(m, path)
        return path

    def weights(m, c, zeros):
        w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
        w[rng.random(w.shape) < zeros] = 0
        return w

    cases = []
    for bad in (np.inf, np.nan):
        w = weights(16, 16, 0.9)
        w[2, 3, 0, 0] = bad  # a corner tap: on the border rows it meets the padding
        cases.append(("sparse_" + str(bad), conv_model("nonfinite_sparse_%s" % bad, [w], 6), 16, 6))
        w2 = weights(20, 20, 0.0)
        w2[5, 7, 2, 2] = bad
        cases.append(("thin_" + str(bad), conv_model("nonfinite_thin_%s" % bad, [weights(20, 3, 0.0), w2], 24), 3, 24))
    for tag, path, c, size in cases:
        x = rng.standard_normal((1, c, size, size)).astype(np.float32)
        for opts in (("--sparse", "always"), ("--sparse", "auto"), ("--sparse", "off"), ("--planes", "nhwc")):
            for t in ("1", "2"):
                run_vs_ort(a, path, x, "nonfinite_%s_%s_t%s" % (tag, opts[1], t), *opts, "-t", t)
        if tag.startswith("sparse"):
            insp = json.loads(run_sluice(a, "inspect", path, "--json", "--sparse", "always").stdout)
            kernel = [n for n in insp["nodes"] if n["op"] == "Conv"][0]["kernel"]
            check("inf or NaN weights" in kernel, "%s: inspect says why the sparse kernel is not used: %s" % (tag, kernel))
    print("non-finite weights: %d models, each with 4 option sets on 1 and 2 threads, equal to ORT" % len(cases))
    # An inf and a NaN in the input: ORT multiplies them by the zero weights (NaN around them);
    # the sparse kernel skips those, so such a run takes the reference kernels (and says so).
    path = conv_model("nonfinite_input_sparse", [weights(16, 16, 0.9), weights(16, 16, 0.9)], 8)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    x[0, 3, 2, 5], x[0, 9, 6, 1] = np.inf, np.nan
    for opts in (("--sparse", "always"), ("--sparse", "auto")):
        for t in ("1", "2"):
            run_vs_ort(a, path, x, "nonfinite_input_%s_t%s" % (opts[1], t), *opts, "-t", t)
    xin = os.path.join(a.work_dir, "nonfinite_input_x.npy")
    np.save(xin, x)
    r = run_sluice(a, "run", path, "--input", "image=" + xin, "--output-dir", os.path.join(a.work_dir, "nonfinite_input_out"),
                   "--sparse", "always")
    check("the run used the reference kernels" in r.stderr, "nonfinite input: run says it used the reference kernels (%s)" %
          r.stderr.strip())
    # An inf or NaN that arises inside the network from a finite input (found by a probe): a NaN
    # weight in a dense conv, and weights of 1e20 on inputs of 1e19 (sums past the float range),
    # each read by a 90%-zero conv on the sparse kernel, which skips 0 x NaN. The NaN weight is
    # seen at load: every run takes the reference kernels (stats' nonfinite_weights names the
    # conv); the overflow is seen in the outputs: the run is repeated on the reference kernels.
    # Both give ORT's NaN and inf, and `run` says which happened.
    w = weights(16, 16, 0.0)
    w[0, 0, 0, 0] = np.nan
    nan_path = conv_model("nonfinite_inside_nan", [w, weights(16, 16, 0.9)], 8)
    big_path = conv_model("nonfinite_inside_overflow", [weights(16, 16, 0.0) * np.float32(1e20), weights(16, 16, 0.9)], 8)
    for tag, path, scale in (("nan", nan_path, 1.0), ("overflow", big_path, 1e19)):
        x = (rng.standard_normal((1, 16, 8, 8)) * scale).astype(np.float32)
        for t in ("1", "2"):
            _, ref, st = run_vs_ort(a, path, x, "nonfinite_inside_%s_t%s" % (tag, t), "--sparse", "always", "-t", t)
            said = st.get("nonfinite_weights") if tag == "nan" else st.get("nonfinite_outputs")
            check(not np.isfinite(ref).all() and said == ("Conv_0" if tag == "nan" else True),
                  "nonfinite inside (%s): ORT's output has inf or NaN, and the stats say %s (%s)" % (
                      tag, "which conv's weights are not finite" if tag == "nan" else "the run was repeated", said))
    xin = os.path.join(a.work_dir, "nonfinite_inside_x.npy")
    np.save(xin, rng.standard_normal((1, 16, 8, 8)).astype(np.float32))
    r = run_sluice(a, "run", nan_path, "--input", "image=" + xin, "--output-dir", os.path.join(a.work_dir, "nonfinite_inside_out"),
                   "--sparse", "always")
    check("weights or bias of 'Conv_0' hold inf or NaN" in r.stderr, "nonfinite weights: run names the conv (%s)" % r.stderr.strip())
    np.save(xin, (rng.standard_normal((1, 16, 8, 8)) * 1e19).astype(np.float32))
    r = run_sluice(a, "run", big_path, "--input", "image=" + xin, "--output-dir", os.path.join(a.work_dir, "nonfinite_inside_out"),
                   "--sparse", "always")
    check("arose inside the network" in r.stderr, "nonfinite inside: run says it repeated the run (%s)" % r.stderr.strip())


def sparse_initializer_case(a):
    """Weights stored in graph.sparse_initializer (ONNX's SparseTensorProto), with flat indices
    and with one coordinate per axis, run as ONNX Runtime runs them (they were refused as "a
    missing initializer"); an index outside the dims is refused by name."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(3)
    w = rng.uniform(-1, 1, (6, 4, 3, 3)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    flat = w.reshape(-1)
    nz = np.nonzero(flat)[0].astype(np.int64)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    for form, idx in (("flat", nz), ("coo", np.stack(np.unravel_index(nz, w.shape), 1).astype(np.int64)),
                      ("outside", np.concatenate([nz[:-1], [w.size]]))):
        sp = helper.make_sparse_tensor(numpy_helper.from_array(flat[nz], "w"), numpy_helper.from_array(idx, "w_idx"),
                                       list(w.shape))
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        g.sparse_initializer.append(sp)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        path = os.path.join(a.work_dir, "sparse_initializer_%s.onnx" % form)
        onnx.save(m, path)
        if form == "outside":
            p = run_sluice(a, "run", path, "--input", "x=" + os.path.join(a.work_dir, "sparse_init_x.npy"), "--output-dir",
                           os.path.join(a.work_dir, "sparse_init_bad"), check_ok=False)
            check(p.returncode == 1 and "sparse initializer 'w'" in p.stderr and "outside its dims" in p.stderr,
                  "sparse initializer with an index past its dims: refused by name (exit %d: %s)" % (
                      p.returncode, p.stderr.strip()[:200]))
            continue
        np.save(os.path.join(a.work_dir, "sparse_init_x.npy"), x)
        for t in ("1", "2"):
            run_vs_ort(a, path, x, "sparse_initializer_%s_t%s" % (form, t), "-t", t, "--sparse", "always",
                       input_name="x", output_name="y")


def main():
    a = parse_args(__doc__)
    nonfinite_weights_case(a)
    sparse_initializer_case(a)
    paths = []
    # random-weight MobileNetV2 loses its signal when pruned harder (a constant output)
    for models, sparsity in (("resnet18", "0.5,0.9"), ("mobilenet_v2", "0.5")):
        paths += subprocess.run([sys.executable, os.path.join(REPO, "models", "export_sparse.py"), "--models", models,
                                 "--sparsity", sparsity, "--size", str(SIZE), "--out-dir", a.work_dir],
                                check=True, capture_output=True, text=True).stdout.split()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    xin = os.path.join(a.work_dir, "x.npy")
    np.save(xin, x)
    for path in paths:
        name = os.path.basename(path)
        ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        scale = max(1.0, float(np.abs(ref).max()))
        spread = float(np.abs(ref[0] - ref[1]).max())
        check(spread > 1e-6 * scale, "%s: the two inputs give different outputs (the net is alive: %.2g)" % (name, spread))
        dense, executed, dead_filters = expected_macs(path)
        for mode in ("always", "auto"):
            out = os.path.join(a.work_dir, name + "_" + mode)
            st_path = out + ".json"
            run_sluice(a, "run", path, "--input", xin, "--output-dir", out, "--stats-json", st_path, "--sparse", mode)
            y = np.load(os.path.join(out, "logits.npy"))
            err = float(np.abs(y - ref).max())
            check(err <= 1e-3 * scale, "%s --sparse %s: max abs error vs ORT %.2g (scale %.2g)" % (name, mode, err, scale))
            st = json.load(open(st_path))
            check(st["dense_macs"] == 2 * dense, "%s --sparse %s: dense MACs %d = file's %d" % (
                name, mode, st["dense_macs"], 2 * dense))
            if mode == "always" and not dead_filters:
                check(st["executed_macs"] == 2 * executed, "%s: executed MACs %d = non-zero weights x pixels %d" % (
                    name, st["executed_macs"], 2 * executed))
            elif mode == "always":  # all-zero filters: static pruning removes them (and their readers' inputs) first
                check(st["executed_macs"] < 2 * executed, "%s: executed MACs %d < non-zero weights x pixels %d "
                      "(dead filters removed)" % (name, st["executed_macs"], 2 * executed))
            else:
                low = 0 if dead_filters else 2 * executed  # (removed dead filters take their MACs along)
                check(low <= st["executed_macs"] <= 2 * dense, "%s --sparse auto: executed MACs %d between %d and %d" % (
                    name, st["executed_macs"], low, 2 * dense))
        insp = json.loads(run_sluice(a, "inspect", path, "--json", "--sparse", "always", "--shape", "image=1x3x%dx%d" % (SIZE, SIZE)).stdout)
        convs = [n for n in insp["nodes"] if n["op"] == "Conv"]
        sparse = [n for n in convs if n["kernel"].startswith("sparse:")]
        check(len(sparse) > 0 and all("zeros" in n["kernel"] for n in sparse),
              "%s: inspect names the sparse kernel on %d of %d convs" % (name, len(sparse), len(convs)))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
