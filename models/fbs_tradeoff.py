"""Accuracy vs density vs MACs of the FBS models, measured by Sluice itself on the
Fashion-MNIST test set (the FBS paper's trade-off curve, on real data), with `sluice eval`.

    .venv/bin/python models/fbs_tradeoff.py --sluice build/sluice [--limit 10000] [--batch 500] \
        [--out models/fbs/tradeoff.md]

Rows: each committed model at its trained density, and the d = 1.0 model run with the
run-time `--density` override (no re-export, no fine-tuning) at the lower densities.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


DENSITIES = [1.0, 0.75, 0.5, 0.35, 0.25]


def evaluate(sluice, model, limit, batch, extra, work):
    """`sluice eval` over the first `limit` test images; returns its figures."""
    out = os.path.join(work, "eval.json")
    cmd = [sluice, "eval", model, "--limit", str(limit), "--batch", str(batch), "--json", out,
           "--plot", os.path.join(work, "density.svg")] + extra
    print("  " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    r = json.load(open(out))
    m = r["executed_macs_per_image"]
    return r["accuracy"], m["mean"], m["min"], m["max"], r["dense_macs_per_image"], r["gate_macs_per_image"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--sluice", default=os.path.join(os.path.dirname(here), "build", "sluice"))
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--out", default=os.path.join(here, "fbs", "tradeoff.md"))
    a = ap.parse_args()
    acc_pt = json.load(open(os.path.join(here, "fbs", "pytorch_accuracy.json")))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for d in DENSITIES:
            m = os.path.join(here, "fbs", "mcifar_fbs_d%d.onnx" % round(d * 100))
            rows.append(("trained at d=%.2f" % d, d, acc_pt.get(str(d))) + evaluate(a.sluice, m, a.limit, a.batch, [], work))
        full = os.path.join(here, "fbs", "mcifar_fbs_d100.onnx")
        for d in DENSITIES[1:]:
            rows.append(("d=1.0 model, --density %.2f" % d, d, None) +
                        evaluate(a.sluice, full, a.limit, a.batch, ["--density", str(d)], work))
    lines = ["| model | density | accuracy (Sluice) | accuracy (PyTorch) | executed MMACs / image (mean, min–max) | dense MMACs | MAC reduction | gate MACs / image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d, pt, acc, mean, lo, hi, dense, gate in rows:
        lines.append("| %s | %.2f | %.2f%% | %s | %.2f (%.2f–%.2f) | %.2f | %.2fx | %d |" % (
            name, d, 100 * acc, "%.2f%%" % (100 * pt) if pt is not None else "-", mean / 1e6, lo / 1e6, hi / 1e6,
            dense / 1e6, dense / mean, gate))
    text = "\n".join(lines) + "\n\nFashion-MNIST test set, first %d images; `%s`.\n" % (
        a.limit, " ".join(["models/fbs_tradeoff.py", "--limit", str(a.limit)]))
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
