#!/usr/bin/env python3
"""FBS gating speed: Sluice gated vs Sluice --gating off vs ONNX Runtime, on the same files.

    .venv/bin/python bench/compare_fbs.py --models vgg16_fbs,resnet18_fbs --densities 1.0,0.75,0.5,0.25 \
        --threads 1,2 --runs 10 --warmup 2 --rounds 2 [--work-dir build/bench] [--markdown] [--json-out F]

Each model is exported once per density by models/export_fbs.py (random weights, 224x224,
batch 1; cached in WORK_DIR/fbs). For every (model, density, threads) the three runs are
made one right after the other, and with --rounds K that alternation repeats K times; the
reported latency is the median over all timed runs. Columns:

  MAC ratio  = dense MACs / executed MACs (Sluice's stats for this input)
  realised   = gating-off time / gated time, timed in one process in alternating blocks of
               --block runs after --block-warmup untimed ones (`sluice bench FILE --against-option
               gating=off`): the median over
               block pairs of the blocks' median ratio (--unpaired: two processes, the ratio of
               their medians, as before stop 23)
  eff.       = realised / MAC ratio (the share of the MAC saving turned into time)
  vs ORT     = ORT time / gated time, and its share of the MAC ratio
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import svg_plot  # noqa: E402
from compare_ort import (add_pairing_args, bench_ort, bench_pair, log, make_ort_session, run_footer,  # noqa: E402
                         write_rows)


def ensure_models(models, densities, out_dir, python):
    paths = {}
    missing = []
    for m in models:
        for d in densities:
            p = os.path.join(out_dir, "%s_d%d.onnx" % (m, round(d * 100)))
            paths[(m, d)] = p
            if not os.path.exists(p):
                missing.append((m, d))
    if missing:
        ms = sorted({m for m, _ in missing})
        ds = sorted({d for _, d in missing})
        log("exporting %s at densities %s ..." % (",".join(ms), ",".join(map(str, ds))))
        subprocess.run([python, os.path.join(REPO, "models", "export_fbs.py"), "--models", ",".join(ms),
                        "--densities", ",".join(map(str, ds)), "--out-dir", out_dir], check=True,
                       stdout=subprocess.DEVNULL)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sluice", default=os.path.join(REPO, "build", "sluice"))
    ap.add_argument("--models", default="vgg16_fbs,resnet18_fbs")
    ap.add_argument("--densities", default="1.0,0.75,0.5,0.25")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench"))
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json-out")
    add_pairing_args(ap, "gated and gating off")
    ap.add_argument("--plot", metavar="FILE.svg", help="also draw realised speedup against MAC ratio as an SVG chart")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    densities = [float(d) for d in a.densities.split(",") if d]
    threads = [int(t) for t in a.threads.split(",") if t]
    paths = ensure_models(models, densities, os.path.join(a.work_dir, "fbs"), sys.executable)
    rows = []
    for m in models:
        for d in densities:
            path = paths[(m, d)]
            for t in threads:
                gated, off, ort_t, ratios = [], [], [], []
                stats = None
                sess = None if a.no_ort else make_ort_session(path, t)
                for r in range(a.rounds):
                    log("%s d=%.2f threads=%d round %d/%d" % (m, d, t, r + 1, a.rounds))
                    stats, tg, to, rs = bench_pair(a.sluice, path, t, a.runs, a.warmup,
                                                   ["--against-option", "gating=off"], a)
                    gated += tg
                    off += to
                    ratios += rs
                    if sess is not None:
                        ort_t += bench_ort(sess, a.runs, a.warmup)["times_ms"]
                row = {"model": m, "density": d, "threads": t,
                       "gated_ms": statistics.median(gated), "off_ms": statistics.median(off),
                       "ort_ms": statistics.median(ort_t) if ort_t else None,
                       "dense_macs": stats["dense_macs"], "executed_macs": stats["executed_macs"],
                       "gate_macs": stats.get("gate_macs", 0)}
                row["mac_ratio"] = row["dense_macs"] / max(1, row["executed_macs"])
                row["realised"] = statistics.median(ratios)
                row["efficiency"] = row["realised"] / row["mac_ratio"]
                if row["ort_ms"]:
                    row["vs_ort"] = row["ort_ms"] / row["gated_ms"]
                    row["vs_ort_eff"] = row["vs_ort"] / row["mac_ratio"]
                rows.append(row)
                log("  gated %.2f ms, off %.2f ms, ort %s ms; MAC ratio %.2f, realised %.2f (%.0f%%)" % (
                    row["gated_ms"], row["off_ms"], "%.2f" % row["ort_ms"] if row["ort_ms"] else "-",
                    row["mac_ratio"], row["realised"], 100 * row["efficiency"]))
    if a.markdown:
        print("| model | d | threads | gated (ms) | gating off (ms) | ORT (ms) | MAC ratio | realised | realised / MAC ratio | ORT / gated | (ORT / gated) / MAC ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            ort = "%.1f" % r["ort_ms"] if r["ort_ms"] else "-"
            vs = "%.2f" % r["vs_ort"] if r.get("vs_ort") else "-"
            vse = "%.2f" % r["vs_ort_eff"] if r.get("vs_ort_eff") else "-"
            print("| %s | %.2f | %d | %.1f | %.1f | %s | %.2f | %.2f | %.2f | %s | %s |" % (
                r["model"], r["density"], r["threads"], r["gated_ms"], r["off_ms"], ort, r["mac_ratio"],
                r["realised"], r["efficiency"], vs, vse))
        print()
        print(run_footer(a))
    write_rows(rows, a)
    if a.plot and rows:
        log("plot: " + svg_plot.speedup_vs_mac_ratio(
            a.plot, rows, "realised", "FBS gating in Sluice: gated vs gating off (a point per density)",
            run_footer(a)))


if __name__ == "__main__":
    main()
