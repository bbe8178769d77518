#!/usr/bin/env python3
"""Latency of Sluice vs ONNX Runtime on the same torchvision ONNX files.

    .venv/bin/python bench/compare_ort.py --sluice build/sluice --models resnet18,mobilenet_v2,vgg16 \
        --size 224 --threads 1,2 --runs 20 --warmup 3 [--work-dir build/bench] [--markdown]

Models are exported with models/export_torchvision.py (random weights, cached in
WORK_DIR/models, opset --opset, batch 1). For every model and thread count, Sluice
(`sluice bench MODEL --threads N --runs R --warmup W --json`, which draws its own random input)
and ONNX Runtime (same file, intra_op_num_threads=N, inter_op_num_threads=1, sequential
execution, all graph optimizations, same warm-up and run counts, median of the runs) are timed
one right after the other; with --rounds K this alternation is repeated K times and the median
over all timed runs of all rounds is reported (median of the per-round medians if `sluice bench`
does not report its per-run times). The table has, per row, the median latencies and the
ratio ORT/Sluice (> 1 means Sluice is faster). Progress goes to stderr, the table to stdout;
--markdown prints a markdown table (for bench/README.md), --json-out FILE saves everything.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "models"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_model(name, size, opset, model_dir, slim, fold_bn):
    import export_torchvision as et
    path = os.path.join(model_dir, et.model_filename(name, size, opset, fold_bn=fold_bn, slim_classifier=slim))
    if not os.path.exists(path):
        import torch
        torch.set_num_threads(1)
        log("exporting %s (%dx%d, opset %d) ..." % (name, size, size, opset))
        et.export(name, size, opset, model_dir, fold_bn=fold_bn, slim_classifier=slim, path=path, verbose=False)
    return path


def bench_sluice(sluice, path, threads, runs, warmup, extra=()):
    cmd = [sluice, "bench", path, "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--json"]
    cmd += list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    out = p.stdout.strip()
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        pass
    # tolerate text before the JSON object: decode from the first line that starts with '{'
    dec = json.JSONDecoder()
    for pos in [0] + [i + 1 for i, ch in enumerate(out) if ch == "\n"]:
        if out.startswith("{", pos):
            try:
                return dec.raw_decode(out, pos)[0]
            except json.JSONDecodeError:
                continue
    raise RuntimeError("cannot parse `sluice bench --json` output: %r" % out[-500:])


def add_pairing_args(ap, what):
    """The paired-timing flags of the compare scripts; `what` names the two sides."""
    ap.add_argument("--block", type=int, default=5, help="timed runs per block in the paired timing (default 5)")
    ap.add_argument("--block-warmup", type=int, default=5,
                    help="untimed runs at the start of each block (default 5): the first runs after the "
                         "other side are slower, its data having taken the caches")
    ap.add_argument("--unpaired", action="store_true",
                    help="time %s in separate processes (the ratio of their medians)" % what)


def bench_pair(sluice, path, threads, runs, warmup, against, a):
    """Times path and a second side: against is `["--against", OTHER]` and/or
    `["--against-option", "KEY=VALUE", ...]` (the same file with an option changed). Paired (the
    default): one `sluice bench ... --against` process, alternating blocks of a.block runs, each
    after a.block_warmup untimed ones, ratios = per block pair, second side's median / first's.
    Unpaired (a.unpaired): two processes one after the other, ratios = [ratio of their medians].
    Returns (first's stats JSON, its times, the second's times, ratios)."""
    if not a.unpaired:
        s = bench_sluice(sluice, path, threads, runs, warmup,
                         list(against) + ["--block", str(a.block), "--block-warmup", str(a.block_warmup)])
        return s, s["times_ms"], s["against"]["times_ms"], s["ratio_blocks"]
    other, extra = path, []
    for flag, value in zip(against[::2], against[1::2]):
        if flag == "--against":
            other = value
        else:  # --against-option KEY=VALUE -> --KEY VALUE
            k, v = value.split("=", 1)
            if k == "reference":
                extra += ["--reference"] if v == "on" else []
            else:
                extra += ["--" + k, v]
    s = bench_sluice(sluice, path, threads, runs, warmup)
    o = bench_sluice(sluice, other, threads, runs, warmup, extra)
    return s, s["times_ms"], o["times_ms"], [o["median_ms"] / s["median_ms"]]


def run_footer(a, setup="224x224, batch 1"):
    """The line under a markdown table: what ran, how often, on what machine."""
    return "%s; %d round(s) x %d timed runs after %d warm-up; medians; %s, %d CPUs." % (
        setup, a.rounds, a.runs, a.warmup, platform.processor() or platform.machine(), os.cpu_count())


def write_rows(rows, a):
    """Rows as JSON: to stdout without --markdown, and to --json-out when given."""
    if not a.markdown:
        print(json.dumps(rows, indent=2))
    if getattr(a, "json_out", None):
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=2)


def make_ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def bench_ort(sess, runs, warmup, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "times_ms": times}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Sluice vs ONNX Runtime latency on torchvision models")
    ap.add_argument("--sluice", default=os.path.join(REPO, "build", "sluice"))
    ap.add_argument("--models", default="resnet18,mobilenet_v2,vgg16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the Sluice/ORT alternation K times; report the median over all rounds")
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench"))
    ap.add_argument("--slim-classifier", action="store_true", help="vgg/alexnet with 256-wide FC layers")
    ap.add_argument("--fold-bn", action="store_true", help="export with Conv+BN already folded by torch")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--json-out", help="also write all measurements to this JSON file")
    args = ap.parse_args(argv)

    sluice = os.path.abspath(args.sluice)
    if not (os.path.isfile(sluice) and os.access(sluice, os.X_OK)):
        ap.error("sluice binary not found or not executable: %s" % sluice)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    model_dir = os.path.join(os.path.abspath(args.work_dir), "models")
    os.makedirs(model_dir, exist_ok=True)

    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load1 > 0.5:
        log("note: 1-minute load average is %.2f: other processes compete for the CPUs, timings are noisy" % load1)
    rows = []
    for name in models:
        path = ensure_model(name, args.size, args.opset, model_dir, args.slim_classifier, args.fold_bn)
        for n in threads:
            log("%s, %d thread(s): loading ORT session ..." % (name, n))
            sess = make_ort_session(path, n)
            s_meds, o_meds, s_times, o_times, s_last, o_last = [], [], [], [], None, None
            for r in range(args.rounds):
                log("  round %d/%d: sluice bench (%d+%d runs) ..." % (r + 1, args.rounds, args.warmup, args.runs))
                s_last = bench_sluice(sluice, path, n, args.runs, args.warmup)
                s_meds.append(float(s_last["median_ms"]))
                if isinstance(s_last.get("times_ms"), list) and s_last["times_ms"]:
                    s_times.append([float(t) for t in s_last["times_ms"]])
                log("    sluice median %.2f ms; onnxruntime (%d+%d runs) ..." % (s_meds[-1], args.warmup, args.runs))
                o_last = bench_ort(sess, args.runs, args.warmup)
                o_meds.append(o_last["median_ms"])
                o_times.append(o_last["times_ms"])
                log("    onnxruntime median %.2f ms" % o_meds[-1])
            del sess
            s_med, o_med = statistics.median(s_meds), statistics.median(o_meds)
            if s_times and len(s_times) == args.rounds:  # sluice reported its per-run times: pool the runs
                s_med = statistics.median([t for ts in s_times for t in ts])
                o_med = statistics.median([t for ts in o_times for t in ts])
            row = {"model": name, "size": args.size, "opset": args.opset, "threads": n,
                   "sluice_median_ms": s_med, "ort_median_ms": o_med, "ort_over_sluice": o_med / s_med,
                   "sluice_min_ms": s_last.get("min_ms"), "ort_min_ms": o_last["min_ms"],
                   "dense_macs": s_last.get("dense_macs"), "executed_macs": s_last.get("executed_macs"),
                   "sluice_round_medians_ms": s_meds, "ort_round_medians_ms": o_meds}
            rows.append(row)
            log("  => %s x%d: sluice %.2f ms, ort %.2f ms, ORT/Sluice %.2f" % (name, n, s_med, o_med, o_med / s_med))

    import onnxruntime
    meta = {"runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "size": args.size,
            "opset": args.opset, "onnxruntime": onnxruntime.__version__, "cpu": platform.processor() or
            platform.machine(), "nproc": os.cpu_count(), "load_average_at_start": load1}
    if args.markdown:
        print("| model | threads | Sluice median (ms) | ORT median (ms) | ORT / Sluice |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print("| %s | %d | %.2f | %.2f | %.2f |" % (r["model"], r["threads"], r["sluice_median_ms"],
                                                      r["ort_median_ms"], r["ort_over_sluice"]))
        print()
        print("%dx%d input, batch 1, opset %d, %d warm-up + %d timed runs%s; onnxruntime %s; %d CPUs "
              "(load average %.2f at start). ORT / Sluice > 1 means Sluice is faster." % (
                  args.size, args.size, args.opset, args.warmup, args.runs,
                  ", %d alternating rounds" % args.rounds if args.rounds > 1 else "", onnxruntime.__version__,
                  os.cpu_count(), load1))
    else:
        print("%-20s %7s %18s %15s %13s" % ("model", "threads", "sluice median ms", "ORT median ms", "ORT/Sluice"))
        for r in rows:
            print("%-20s %7d %18.2f %15.2f %13.2f" % (r["model"], r["threads"], r["sluice_median_ms"],
                                                      r["ort_median_ms"], r["ort_over_sluice"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
