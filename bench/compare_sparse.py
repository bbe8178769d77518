#!/usr/bin/env python3
"""Unstructured sparsity: Sluice with its sparse kernels (`--sparse auto`: per layer, the faster
of sparse and dense as measured at session creation) vs Sluice dense (`--sparse off`) vs ONNX
Runtime, on the same magnitude-pruned files, in one run; plus the per-layer sparse/dense times
behind the choice.

    .venv/bin/python bench/compare_sparse.py --models resnet18,mobilenet_v2,vgg16 \
        --sparsity 0.5,0.7,0.8,0.9,0.95 --threads 1,2 --runs 10 --rounds 2 [--work-dir build/bench] \
        [--layers-model resnet18 --layers-sparsity 0.9] [--markdown]

Files: models/export_sparse.py (global L1 over the convs, l1_unstructured on the classifier;
224x224, batch 1; `--scope layer`: every conv at the same sparsity), cached in WORK_DIR/sparse. Columns: speedup = dense time / sparse time,
timed in one process in alternating blocks of --block runs after --block-warmup untimed ones
(`sluice bench FILE --against-option sparse=off`),
the median over block pairs of the blocks' median ratio (--unpaired: two processes, the ratio of their medians);
MAC ratio = dense MACs / executed MACs (non-zero weights only where the sparse kernel runs).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import svg_plot  # noqa: E402
from compare_ort import add_pairing_args, bench_ort, bench_pair, log, make_ort_session, run_footer  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "models"))
from export_sparse import fraction, sparsity_list  # noqa: E402  (argument types; torch is not imported)


def export(models, sparsity, out_dir, scope):
    out = subprocess.run([sys.executable, os.path.join(REPO, "models", "export_sparse.py"), "--models", models,
                          "--sparsity", sparsity, "--out-dir", out_dir, "--scope", scope],
                         capture_output=True, text=True)
    if out.returncode != 0:  # e.g. --sparsity 90: export_sparse.py says what to write instead
        sys.exit("compare_sparse.py: exporting %s at sparsity %s failed:\n%s" % (models, sparsity, out.stderr.strip()[-2000:]))
    return out.stdout.split()


def layer_table(sluice, path, threads):
    insp = json.loads(subprocess.run([sluice, "inspect", path, "--json", "--threads", str(threads), "--shape",
                                      "image=1x3x224x224"], check=True, capture_output=True, text=True).stdout)
    rows = []
    for n in insp["nodes"]:
        m = re.search(r"\[measured: sparse ([0-9.]+) ms, dense ([0-9.]+) ms\]", n["kernel"])
        z = re.search(r"(\d+)% zero", n["kernel"])
        if m:
            rows.append((n["name"], n["op"], z.group(1) if z else "?", float(m.group(1)), float(m.group(2)),
                         "sparse" if n["kernel"].startswith("sparse") else "dense"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sluice", default=os.path.join(REPO, "build", "sluice"))
    ap.add_argument("--models", default="resnet18,mobilenet_v2,vgg16")
    ap.add_argument("--sparsity", type=sparsity_list, default="0.5,0.7,0.8,0.9,0.95",
                    help="fractions of zero weights, e.g. 0.9 for 90%%")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench"))
    ap.add_argument("--layers-model", default="resnet18")
    ap.add_argument("--layers-sparsity", type=fraction, default=0.9, help="a fraction, as --sparsity")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--layers-only", action="store_true", help="only the per-layer table")
    ap.add_argument("--scope", choices=["global", "layer"], default="global",
                    help="pruning: one threshold over all convs (global) or each conv at the same sparsity (layer)")
    add_pairing_args(ap, "sparse and dense")
    ap.add_argument("--plot", metavar="FILE.svg",
                    help="also draw speedup over dense against sparsity as an SVG chart, with each model's MAC ratio")
    a = ap.parse_args()
    out_dir = os.path.join(a.work_dir, "sparse")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for model in ([] if a.layers_only else a.models.split(",")):
        log("exporting %s at %s ..." % (model, ",".join(map(repr, a.sparsity))))
        for frac, path in zip(a.sparsity, export(model, ",".join(map(repr, a.sparsity)), out_dir, a.scope)):  # (in order)
            s = round(100 * frac, 2)
            for t in (int(v) for v in a.threads.split(",")):
                sp, dn, ort_t, ratios, stats = [], [], [], [], None
                sess = None if a.no_ort else make_ort_session(path, t)
                for r in range(a.rounds):
                    log("%s %g%% threads=%d round %d/%d" % (model, s, t, r + 1, a.rounds))
                    stats, tsp, tdn, rs = bench_pair(a.sluice, path, t, a.runs, a.warmup,
                                                     ["--against-option", "sparse=off"], a)
                    sp += tsp
                    dn += tdn
                    ratios += rs
                    if sess is not None:
                        ort_t += bench_ort(sess, a.runs, a.warmup)["times_ms"]
                row = {"model": model + (" (per layer)" if a.scope == "layer" else ""), "sparsity": s, "threads": t,
                       "sparse_ms": statistics.median(sp),
                       "dense_ms": statistics.median(dn), "ort_ms": statistics.median(ort_t) if ort_t else None,
                       "mac_ratio": stats["dense_macs"] / stats["executed_macs"]}
                row["speedup"] = statistics.median(ratios)
                rows.append(row)
                log("  sparse %.2f ms, dense %.2f ms (x%.2f), ORT %s ms, MAC ratio %.2f" % (
                    row["sparse_ms"], row["dense_ms"], row["speedup"],
                    "%.2f" % row["ort_ms"] if row["ort_ms"] else "-", row["mac_ratio"]))
    layers = []
    # (exported here if --sparsity did not include it: the table once went missing silently)
    lpath = export(a.layers_model, repr(a.layers_sparsity), out_dir, a.scope)[0]
    layers = layer_table(a.sluice, lpath, 1)
    if a.markdown:
        print("| model | sparsity | threads | sparse auto (ms) | dense (ms) | speedup | MAC ratio | ORT (ms) | ORT / sparse |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            ort = "%.1f" % r["ort_ms"] if r["ort_ms"] else "-"
            vs = "%.2f" % (r["ort_ms"] / r["sparse_ms"]) if r["ort_ms"] else "-"
            print("| %s | %g%% | %d | %.1f | %.1f | %.2f | %.2f | %s | %s |" % (
                r["model"], r["sparsity"], r["threads"], r["sparse_ms"], r["dense_ms"], r["speedup"], r["mac_ratio"],
                ort, vs))
        print()
        print(run_footer(a))
        if layers:
            print()
            print("Per layer, %s at %g%% (1 thread; the times `--sparse auto` measured when the session was made):" % (
                a.layers_model, round(100 * a.layers_sparsity, 2)))
            print()
            print("| layer | op | weights zero | sparse (ms) | dense (ms) | dense / sparse | chosen |")
            print("|---|---|---:|---:|---:|---:|---|")
            for name, op, z, ts, td, ch in layers:
                print("| %s | %s | %s%% | %.3f | %.3f | %.2f | %s |" % (name, op, z, ts, td, td / ts, ch))
    if a.plot and rows:
        log("plot: " + sparsity_plot(a.plot, rows, run_footer(a)))


def sparsity_plot(path, rows, subtitle):
    """Speedup over dense against sparsity, a line per (model, threads), and each model's MAC
    ratio (what skipping every zero weight would give) as a dashed guide."""
    series, ratio = {}, {}
    for r in rows:
        series.setdefault((r["model"], r["threads"]), []).append((r["sparsity"], r["speedup"]))
        ratio.setdefault(r["model"], {}).setdefault(r["sparsity"], r["mac_ratio"])
    return svg_plot.chart(
        path, "Sparse kernels vs dense in Sluice", subtitle, "weights zero (%)", "speedup over dense (measured)",
        [{"label": "%s, %d thread%s" % (m, t, "" if t == 1 else "s"), "points": p} for (m, t), p in series.items()],
        [{"label": "%s: MAC ratio" % m, "points": sorted(v.items())} for m, v in ratio.items()])


if __name__ == "__main__":
    main()
