"""Shared plumbing of the end-to-end tests: arguments, PASS/FAIL lines, running the CLI."""
import argparse
import os
import subprocess

FAILURES = []


def parse_args(doc):
    """--sluice (the CLI) and --work-dir (created)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--work-dir", required=True)
    a = ap.parse_args()
    os.makedirs(a.work_dir, exist_ok=True)
    return a


def check(cond, what):
    print(("PASS " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def finish():
    """Exit status: 1 if any check failed."""
    print("%d failed" % len(FAILURES))
    return 1 if FAILURES else 0


def run_parts(doc, parts):
    """Parses the arguments and runs each part(a); an exception fails that part only, so one
    part's failure does not hide the others'. Returns the exit status."""
    a = parse_args(doc)
    for part in parts:
        try:
            part(a)
        except Exception as e:
            check(False, "%s: %s: %s" % (part.__name__, type(e).__name__, e))
    return finish()


def expect_refusal(a, path, expect, name):
    """`sluice bench` on a bad file: exit 1 with an error that names the file and says `expect`."""
    p = run_sluice(a, "bench", "-n", "1", "-w", "0", path, check_ok=False, timeout=60)
    check(p.returncode == 1 and expect in p.stderr and path in p.stderr,
          "bad %s: exit %d, error names the file and says %r (stderr: %s)" % (name, p.returncode, expect, p.stderr.strip()[:200]))


def run_sluice(a, *args, check_ok=True, timeout=600):
    """Runs `sluice ARGS`; with check_ok, a non-zero exit raises with its stderr."""
    p = subprocess.run([a.sluice] + list(args), capture_output=True, text=True, timeout=timeout)
    if check_ok and p.returncode != 0:
        raise AssertionError("sluice %s -> exit %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p


def pad_feeds_pool(path):
    """Whether the file has a Pad whose output an AveragePool reads."""
    import onnx

    nodes = onnx.load(path, load_external_data=False).graph.node
    pads = {o for n in nodes if n.op_type == "Pad" for o in n.output}
    return any(n.op_type in ("AveragePool", "MaxPool") and n.input and n.input[0] in pads for n in nodes)


def run_vs_ort(a, path, x, tag, *extra, input_name="image", output_name="logits", tol=1e-4):
    """Runs the model on x with `sluice run` and with ONNX Runtime; checks the outputs agree
    within tol x the output's scale. Returns (sluice output, ORT output, stats JSON)."""
    import json

    import numpy as np
    import onnxruntime as ort

    xin = os.path.join(a.work_dir, tag + "_x.npy")
    np.save(xin, x)
    out = os.path.join(a.work_dir, tag + "_out")
    st_path = os.path.join(a.work_dir, tag + "_stats.json")
    run_sluice(a, "run", path, "--input", input_name + "=" + xin, "--output-dir", out, "--stats-json", st_path, *extra)
    y = np.load(os.path.join(out, output_name + ".npy"))
    ort.set_default_logger_severity(3)  # errors only (kernels warn through the default logger)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: ORT warns about every unused initializer of an export
    if pad_feeds_pool(path):
        # ORT 1.20's PadFusion folds a Pad into the AveragePool or MaxPool after it: it drops
        # count_include_pad (torch's avg_pool2d(count_include_pad=True, padding > 0) exports as
        # Pad + AveragePool), and the max pool's own padding is -inf, not the Pad's 0: its
        # optimised result is wrong there, its plain one right.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {input_name: x})[0]
    if y.shape != ref.shape:
        check(False, "%s: output shape %s, ORT's %s" % (tag, y.shape, ref.shape))
    else:
        # The scale from the finite entries (an inf in ORT's output would let any error pass);
        # inf and NaN entries must be where ORT has them.
        finite = np.isfinite(ref) if ref.dtype.kind == "f" else np.ones(ref.shape, bool)
        same_nonfinite = bool(np.array_equal(np.isnan(y), np.isnan(ref)) and
                              np.array_equal(y[np.isinf(ref)], ref[np.isinf(ref)])) if ref.dtype.kind == "f" else True
        diff = np.abs(y[finite].astype(np.float64) - ref[finite].astype(np.float64)) if finite.any() else np.zeros(1)
        err = float(diff.max()) if diff.size else 0.0
        scale = max(1.0, float(np.abs(ref[finite]).max())) if finite.any() else 1.0
        check(same_nonfinite and err <= tol * scale,
              "%s: max abs error vs ORT %.2g (scale %.2g)%s" % (tag, err, scale, "" if same_nonfinite else
                                                               ", inf/NaN where ORT has none or other ones"))
    with open(st_path) as f:
        return y, ref, json.load(f)
