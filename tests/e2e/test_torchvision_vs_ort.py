#!/usr/bin/env python3
"""End-to-end test: torchvision models (random weights), Sluice CLI vs ONNX Runtime.

For each case below the model is exported with models/export_torchvision.py (random seeded
weights and non-trivial BatchNorm statistics; exports are cached in the work dir), a seeded
random input is written as .npy, and both ONNX Runtime and `sluice run` are run on the very same
ONNX file and input. Every graph output must satisfy

    max |sluice - ort| <= RTOL * max(1, max |ort|)        (RTOL = 1e-3)

and have the same shape. The opsets are spread over 11..17 so every opset is exercised.

Run (as CTest does):
    .venv/bin/python tests/e2e/test_torchvision_vs_ort.py --sluice build/sluice --work-dir build/e2e
Options: --only resnet18,googlenet (case-name substrings), --no-sluice (export + ORT only),
--threads N (Sluice threads, default 2), --reexport, --list.
Prints one line per case and finally exactly `N passed, M failed`; exits 1 if any failed.
Also works under pytest (test_case is parametrized when pytest is importable; set
SLUICE_BIN / SLUICE_E2E_WORK_DIR in the environment).
"""
import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from e2e_util import pad_feeds_pool

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "models"))

RTOL = 1e-3
SEED = 0

# (case name, torchvision model, opset, input size, batch, options)
# Most models at 64x64 to keep the test fast; vgg16 needs 224 (its adaptive 7x7 average pool
# only exports with standard ops when the feature map is a multiple of 7) and runs with narrow
# fully connected layers (--slim-classifier) so the file is ~86 MB instead of ~530 MB.
CASES = [
    ("resnet18",              "resnet18",           11,  64, 1, {}),
    ("mobilenet_v2",          "mobilenet_v2",       12,  64, 1, {}),
    ("squeezenet1_0",         "squeezenet1_0",      13,  64, 1, {}),
    ("mobilenet_v3_small",    "mobilenet_v3_small", 14,  64, 1, {}),   # HardSwish op from opset 14
    ("shufflenet_v2_x0_5",    "shufflenet_v2_x0_5", 15,  64, 1, {}),
    ("efficientnet_b0",       "efficientnet_b0",    16,  64, 1, {}),
    ("googlenet",             "googlenet",          17,  64, 1, {}),
    # avg_pool2d(padding=1, count_include_pad=True) exported as Pad + AveragePool (folded by Sluice)
    ("inception_v3",          "inception_v3",       13,  96, 1, {}),
    ("densenet121",           "densenet121",        13,  64, 1, {}),
    ("regnet_x_400mf",        "regnet_x_400mf",     12,  64, 1, {}),
    # LayerNormalization (opset 17) over channels-last, GELU as Erf, Linear layers as MatMul
    ("convnext_tiny",         "convnext_tiny",      17,  64, 1, {}),
    ("convnext_tiny_op13",    "convnext_tiny",      13,  64, 1, {}),   # LayerNorm as Pow/Sqrt/Div
    ("vgg16_slimfc",          "vgg16",              11, 224, 1, {"slim_classifier": True}),
    # torch folds Conv+BN itself here: the folded weights carry the random BN statistics
    ("resnet18_bnfold",       "resnet18",           17,  64, 1, {"fold_bn": True}),
    # symbolic batch dimension (shape arithmetic: Shape/Gather/Concat/Reshape), run at batch 3
    ("shufflenet_v2_x0_5_dynbatch3", "shufflenet_v2_x0_5", 14, 64, 3, {"dynamic_batch": True}),
]


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def exporter_hash():
    with open(os.path.join(REPO, "models", "export_torchvision.py"), "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:10]


class Harness:
    def __init__(self, work_dir, sluice=None, sluice_threads=2, ort_threads=1, reexport=False, verbose=True):
        self.work_dir = os.path.abspath(work_dir)
        # exports are cached per version of the exporter script; older caches are removed
        self.model_dir = os.path.join(self.work_dir, "models-" + exporter_hash())
        self.sluice = sluice
        self.sluice_threads = sluice_threads
        self.ort_threads = ort_threads
        self.reexport = reexport
        self.verbose = verbose
        os.makedirs(self.model_dir, exist_ok=True)
        for old in glob.glob(os.path.join(self.work_dir, "models-*")):
            if os.path.abspath(old) != self.model_dir:
                shutil.rmtree(old, ignore_errors=True)

    def log(self, msg):
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def model_path(self, case):
        _, model, opset, size, batch, opts = case
        import export_torchvision as et
        path = os.path.join(self.model_dir, et.model_filename(
            model, size, opset, opts.get("dynamic_batch", False), opts.get("fold_bn", False),
            1 if opts.get("dynamic_batch") else batch, opts.get("slim_classifier", False)))
        if self.reexport or not os.path.exists(path):
            import torch
            torch.set_num_threads(1)
            _, info = et.export(model, size, opset, self.model_dir,
                                dynamic_batch=opts.get("dynamic_batch", False), seed=SEED,
                                fold_bn=opts.get("fold_bn", False),
                                batch=1 if opts.get("dynamic_batch") else batch,
                                slim_classifier=opts.get("slim_classifier", False), path=path,
                                verbose=False)
            self.log("  exported %s in %.1fs (%d nodes)" % (os.path.basename(path), info["seconds"], info["nodes"]))
        return path

    def run_ort(self, path, feeds):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.ort_threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if pad_feeds_pool(path):
            # ORT 1.20's PadFusion folds a Pad into the pool after it and drops the pool's
            # count_include_pad (Inception-v3's avg_pool2d(padding=1) exports: its optimised
            # logits were off by ~1e4 from its own unoptimised ones): the plain graph then.
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))

    def run_sluice(self, path, input_files, out_dir):
        """Returns (dict name -> array or None, error message or None)."""
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        cmd = [self.sluice, "run", path]
        for name, f in input_files.items():
            cmd += ["--input", "%s=%s" % (name, f)]
        cmd += ["--output-dir", out_dir, "--threads", str(self.sluice_threads),
                "--stats-json", os.path.join(out_dir, "stats.json")]
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return None, "sluice run timed out after 600 s: %s" % " ".join(cmd), time.time() - t0
        dt = time.time() - t0
        if p.returncode != 0:
            err = (p.stderr.strip() or p.stdout.strip() or "(no output)").splitlines()
            rc = p.returncode if p.returncode >= 0 else "signal %d" % -p.returncode
            return None, "sluice run exited with %s: %s" % (rc, " | ".join(err[-3:])), dt
        return out_dir, None, dt

    def check_case(self, case):
        """Returns (passed, line, details)."""
        cname, model, opset, size, batch, opts = case
        t0 = time.time()
        path = self.model_path(case)
        rng = np.random.default_rng(1000 + SEED)
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        case_dir = os.path.join(self.work_dir, "cases", cname)
        os.makedirs(case_dir, exist_ok=True)
        in_file = os.path.join(case_dir, "input.npy")
        np.save(in_file, x)
        t1 = time.time()
        ref = self.run_ort(path, {"input": x})
        t_ort = time.time() - t1
        head = "%-30s opset %2d  %3dx%-3d batch %d" % (cname, opset, size, size, batch)
        for name, y in ref.items():
            if not np.all(np.isfinite(y)):
                return False, "%s  FAIL (onnxruntime output %r is not finite: test model broken)" % (head, name), ""
        if self.sluice is None:
            mx = max(float(np.abs(y).max()) for y in ref.values())
            return True, "%s  ort ok (max|ort| %.3g, ort %.2fs, total %.1fs)  SKIP-SLUICE" % (
                head, mx, t_ort, time.time() - t0), ""
        out_dir = os.path.join(case_dir, "sluice_out")
        _, err, t_sl = self.run_sluice(path, {"input": in_file}, out_dir)
        if err:
            return False, "%s  FAIL  %s" % (head, err), ""
        worst_err, worst_tol, worst_rel, ok, details = 0.0, 0.0, 0.0, True, []
        compared = 0
        for name, y in ref.items():
            f = os.path.join(out_dir, sanitize(name) + ".npy")
            if not os.path.exists(f):
                ok = False
                present = sorted(os.listdir(out_dir))
                details.append("output %r: sluice wrote no %s (dir has: %s)" % (name, os.path.basename(f), present))
                continue
            try:
                s = np.load(f)
            except Exception as e:  # noqa: BLE001
                ok = False
                details.append("output %r: cannot read %s: %s" % (name, f, e))
                continue
            tol = RTOL * max(1.0, float(np.abs(y).max()))
            worst_tol = max(worst_tol, tol)
            if s.shape != y.shape:
                ok = False
                details.append("output %r: shape %s from sluice, %s from onnxruntime" % (name, s.shape, y.shape))
                continue
            if s.dtype != y.dtype:
                details.append("output %r: note: dtype %s from sluice, %s from onnxruntime" % (name, s.dtype, y.dtype))
            diff = np.abs(s.astype(np.float64) - y.astype(np.float64))
            nonfinite = ~np.isfinite(s)
            if nonfinite.any():
                ok = False
                idx = tuple(int(i) for i in np.argwhere(nonfinite)[0])
                details.append("output %r: %d non-finite values from sluice, first at %s (sluice %r, ort %r)" % (
                    name, int(nonfinite.sum()), idx, float(s[idx]), float(y[idx])))
                continue
            e = float(diff.max())
            compared += 1
            worst_err = max(worst_err, e)
            rel = float(np.linalg.norm(diff) / max(np.linalg.norm(y), 1e-30))
            worst_rel = max(worst_rel, rel)
            if e > tol:
                ok = False
                idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
                idx = tuple(int(i) for i in idx)
                nbad = int((diff > tol).sum())
                top1 = ""
                if y.ndim == 2:
                    agree = float(np.mean(np.argmax(s, axis=1) == np.argmax(y, axis=1)))
                    top1 = ", top-1 agreement %.0f%%" % (100 * agree)
                details.append(
                    "output %r %s: max abs err %.4g > tol %.4g at index %s (sluice %.6g, ort %.6g); "
                    "%d of %d elements over tol; relative L2 err %.3g; max|ort| %.4g, max|sluice| %.4g%s" % (
                        name, y.shape, e, tol, idx, float(s[idx]), float(y[idx]), nbad, y.size, rel,
                        float(np.abs(y).max()), float(np.abs(s).max()), top1))
        if compared == len(ref):
            errs = "max_abs_err %.3g  tol %.3g" % (worst_err, worst_tol)
        else:  # some output could not be compared (missing, wrong shape, non-finite)
            errs = "max_abs_err n/a  tol %.3g" % worst_tol
        line = "%s  %s  %s  (rel_l2 %.2g; ort %.2fs, sluice %.2fs, total %.1fs)" % (
            head, errs, "PASS" if ok else "FAIL", worst_rel, t_ort, t_sl, time.time() - t0)
        return ok, line, "\n".join("    " + d for d in details)


def select_cases(only):
    if not only:
        return list(CASES)
    keys = [k.strip() for k in only.split(",") if k.strip()]
    return [c for c in CASES if any(k in c[0] for k in keys)]


def main(argv=None):
    ap = argparse.ArgumentParser(description="torchvision models: Sluice CLI vs ONNX Runtime")
    ap.add_argument("--sluice", default=os.path.join(REPO, "build", "sluice"), help="path to the sluice binary")
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "e2e"))
    ap.add_argument("--threads", type=int, default=2, help="sluice --threads (default 2)")
    ap.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--only", default="", help="comma-separated substrings of case names")
    ap.add_argument("--no-sluice", action="store_true", help="export and run onnxruntime only")
    ap.add_argument("--reexport", action="store_true", help="ignore cached exports")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)

    cases = select_cases(args.only)
    if args.list:
        for c in cases:
            print("%-30s %-20s opset %2d  %dx%d  batch %d  %s" % (c[0], c[1], c[2], c[3], c[3], c[4], c[5] or ""))
        return 0
    if not cases:
        print("no case matches --only %r" % args.only)
        print("0 passed, 0 failed")
        return 1
    sluice = None
    if not args.no_sluice:
        sluice = os.path.abspath(args.sluice)
        if not (os.path.isfile(sluice) and os.access(sluice, os.X_OK)):
            print("sluice binary not found or not executable: %s" % sluice)
            print("0 passed, %d failed" % len(cases))
            return 1
    h = Harness(args.work_dir, sluice, args.threads, args.ort_threads, args.reexport)
    t0 = time.time()
    passed = failed = 0
    failures = []
    for case in cases:
        try:
            ok, line, details = h.check_case(case)
        except Exception as e:  # noqa: BLE001 -- one broken case must not hide the others
            import traceback
            ok, line = False, "%-30s opset %2d  FAIL  %s: %s" % (case[0], case[2], type(e).__name__, e)
            details = "    " + traceback.format_exc().strip().replace("\n", "\n    ")
        print(line, flush=True)
        if details:
            print(details, flush=True)
        if ok:
            passed += 1
        else:
            failed += 1
            failures.append(case[0])
    print("e2e: %.1fs total%s" % (time.time() - t0, "; failed: " + ", ".join(failures) if failures else ""))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


# --- pytest entry point ---------------------------------------------------------------------
try:
    import pytest

    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_case(case):
        sluice = os.environ.get("SLUICE_BIN", os.path.join(REPO, "build", "sluice"))
        h = Harness(os.environ.get("SLUICE_E2E_WORK_DIR", os.path.join(REPO, "build", "e2e")),
                    sluice, verbose=False)
        ok, line, details = h.check_case(case)
        assert ok, line + "\n" + details
except ImportError:
    pass


if __name__ == "__main__":
    sys.exit(main())
