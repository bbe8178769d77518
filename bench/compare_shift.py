#!/usr/bin/env python3
"""Shift + 1x1 conv, fused, against the 1x1 conv alone (and ONNX Runtime on the shift file),
in one run: the cost of the shift on top of the conv that follows it.

    .venv/bin/python bench/compare_shift.py [--form conv|slice|assign] [--threads 1,2] [--runs 20] [--rounds 3] \
        [--work-dir build/bench] [--markdown]

Per layer shape (ShiftNet-like: C channels shifted in 9 groups, then a 1x1 conv C -> M at
HxW, batch 1), two models are exported from PyTorch: `shift`: Shift(C) -> Conv1x1, `conv`:
Conv1x1 alone with the same weights. `fused / conv` is the time of the first over the second
(target <= 1.05); `ORT / fused` compares ONNX Runtime on the shift file. Whole-model times
include the NCHW<->NHWC reorders of these single-layer files, so the conv layer's own time
(`sluice bench --profile`: the fused layer vs the 1x1 conv layer, medians) is shown too, with
the kernel the fused layer measured faster at session creation. `same, fastest runs` is the
ratio of the two layers' fastest runs (each the minimum over all rounds): on a shared machine
the medians carry the neighbours' load, which costs the fused layer (three input rows read
per output row) more than the plain 1x1 conv (one).
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "models"))
from compare_ort import bench_ort, bench_sluice, log, make_ort_session, run_footer  # noqa: E402
import shift  # noqa: E402

SHAPES = [(56, 96, 64), (28, 192, 128), (14, 384, 256)]  # (H = W, C, M)


def export(path, h, c, m, with_shift, form):
    torch.manual_seed(0)
    conv = nn.Conv2d(c, m, 1, bias=True)
    net = nn.Sequential(shift.Shift(c, 3, form), conv) if with_shift else nn.Sequential(conv)
    torch.onnx.export(net.eval(), torch.randn(1, c, h, h), path, opset_version=13, input_names=["x"],
                      output_names=["y"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sluice", default=os.path.join(REPO, "build", "sluice"))
    ap.add_argument("--form", default="conv", choices=["conv", "slice", "assign"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench"))
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = os.path.join(a.work_dir, "shift")
    os.makedirs(out, exist_ok=True)
    rows = []
    for h, c, m in SHAPES:
        ps = os.path.join(out, "shift_%s_%d_%d_%d.onnx" % (a.form, h, c, m))
        pc = os.path.join(out, "conv_%d_%d_%d.onnx" % (h, c, m))
        export(ps, h, c, m, True, a.form)
        export(pc, h, c, m, False, a.form)
        for t in (int(v) for v in a.threads.split(",")):
            fused, alone, ort_t, fused_layer, conv_layer, fused_min, conv_min = [], [], [], [], [], [], []
            kernel = ""
            sess = make_ort_session(ps, t)
            for r in range(a.rounds):
                log("%dx%d %d->%d threads=%d round %d/%d" % (h, h, c, m, t, r + 1, a.rounds))
                jf = bench_sluice(a.sluice, ps, t, a.runs, a.warmup, ("--profile",))
                jc = bench_sluice(a.sluice, pc, t, a.runs, a.warmup, ("--profile",))
                fused += jf["times_ms"]
                alone += jc["times_ms"]
                lf = [l for l in jf["layers"] if l["op"] == "Conv"]
                lc = [l for l in jc["layers"] if l["op"] == "Conv"]
                fused_layer.append(lf[0]["median_ms"])
                conv_layer.append(lc[0]["median_ms"])
                fused_min.append(lf[0]["min_ms"])
                conv_min.append(lc[0]["min_ms"])
                kernel = lf[0]["kernel"].split(" [")[0]
                ort_t += bench_ort(sess, a.runs, a.warmup)["times_ms"]
            row = {"shape": "%dx%d, %d->%d" % (h, h, c, m), "threads": t, "fused_ms": statistics.median(fused),
                   "conv_ms": statistics.median(alone), "ort_ms": statistics.median(ort_t),
                   "fused_layer_ms": statistics.median(fused_layer), "conv_layer_ms": statistics.median(conv_layer),
                   "fused_layer_min_ms": min(fused_min), "conv_layer_min_ms": min(conv_min), "kernel": kernel}
            rows.append(row)
            log("  fused %.3f ms, conv alone %.3f ms (x%.3f), ORT %.3f ms; layers %.3f vs %.3f ms (x%.3f, %s)" % (
                row["fused_ms"], row["conv_ms"], row["fused_ms"] / row["conv_ms"], row["ort_ms"],
                row["fused_layer_ms"], row["conv_layer_ms"], row["fused_layer_ms"] / row["conv_layer_ms"], kernel))
    if a.markdown:
        print("| layer | threads | fused layer (ms) | 1x1 layer alone (ms) | layer fused / alone | same, fastest runs "
              "| kernel chosen | model fused (ms) | model 1x1 (ms) | model fused / alone | ORT shift file (ms) | ORT / fused |")
        print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print("| %s | %d | %.3f | %.3f | %.3f | %.3f | %s | %.3f | %.3f | %.3f | %.3f | %.2f |" % (
                r["shape"], r["threads"], r["fused_layer_ms"], r["conv_layer_ms"],
                r["fused_layer_ms"] / r["conv_layer_ms"], r["fused_layer_min_ms"] / r["conv_layer_min_ms"], r["kernel"],
                r["fused_ms"], r["conv_ms"],
                r["fused_ms"] / r["conv_ms"], r["ort_ms"], r["ort_ms"] / r["fused_ms"]))
        print()
        print(run_footer(a, "Shift form: %s; batch 1" % a.form))


if __name__ == "__main__":
    main()
