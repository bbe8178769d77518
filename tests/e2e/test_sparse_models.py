#!/usr/bin/env python3
"""Magnitude-pruned (global unstructured L1) torchvision models run by Sluice's sparse kernels
and by ONNX Runtime on the same file: outputs equal, with the sparse kernel forced on every
eligible conv (`--sparse always`) and with the measured choice (`--sparse auto`); executed MACs
equal the count from the file itself (non-zero weights x output pixels for every group-1 conv and
the non-zeros of the Gemm, dense MACs for the depthwise convs); `inspect` names the kernel chosen per conv.

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
from e2e_util import check, finish, parse_args, run_sluice  # noqa: E402


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
            dead_filters |= group == 1 and bool((np.abs(w.reshape(w.shape[0], -1)).sum(1) == 0).any())
        elif n.op_type == "Gemm":  # the CSR kernel runs the non-zeros
            w = inits[n.input[1]]
            dense += w.size
            executed += int(np.count_nonzero(w))
    return dense, executed, dead_filters


def main():
    a = parse_args(__doc__)
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
                check(2 * executed <= st["executed_macs"] <= 2 * dense, "%s --sparse auto: executed MACs between" % name)
        insp = json.loads(run_sluice(a, "inspect", path, "--json", "--sparse", "always", "--shape", "image=1x3x%dx%d" % (SIZE, SIZE)).stdout)
        convs = [n for n in insp["nodes"] if n["op"] == "Conv"]
        sparse = [n for n in convs if n["kernel"].startswith("sparse:")]
        check(len(sparse) > 0 and all("zeros" in n["kernel"] for n in sparse),
              "%s: inspect names the sparse kernel on %d of %d convs" % (name, len(sparse), len(convs)))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
