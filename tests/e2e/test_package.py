#!/usr/bin/env python3
"""The installed package, as an application uses it: `cmake --install` of this build into a
fresh prefix, then tests/package (find_package(Sluice), one C++ file) configured and built
against that prefix alone, run on models/fashion_cnn.onnx and a slimmed model. Its outputs (fast and
reference kernels) must equal ONNX Runtime on the same file and input, its MAC counts must equal
`inspect`'s, a missing model must give exit status 1 and a message naming the file, and the
installed CLI must run.

    .venv/bin/python tests/e2e/test_package.py --sluice build/sluice --work-dir build/e2e_package
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort

from e2e_util import check, run_parts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "fashion_cnn.onnx")
SLIM = os.path.join(ROOT, "models", "slim", "mcifar_slim_p70.onnx")


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(cmd), r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r.stdout


def parse(out):
    """{"fast"/"reference": ({name: array}, (executed, dense))} from the consumer's stdout."""
    runs, cur = {}, None
    for line in out.splitlines():
        f = line.split()
        if f[0] in ("fast", "reference"):
            cur = runs.setdefault(f[0], [{}, None])
        elif f[0] == "output":
            shape = json.loads(line[line.index("["):line.index("]") + 1])
            vals = line[line.index("]") + 1:].split()
            cur[0][f[1]] = np.array([float(v) for v in vals], dtype=np.float32).reshape(shape)
        elif f[0] == "macs":
            cur[1] = (int(f[1]), int(f[2]))
    return runs


def consume(a, exe, model):
    tag = os.path.basename(model)
    runs = parse(sh([exe, model]))
    check(sorted(runs) == ["fast", "reference"], "%s: the consumer ran the fast and the reference kernels" % tag)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        n = int(np.prod(shape))
        feeds[i.name] = np.sin(0.37 * np.arange(n, dtype=np.float64)).astype(np.float32).reshape(shape)
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for kind, (outs, _) in runs.items():
        check(sorted(outs) == sorted(want), "%s, %s: outputs %s are the model's %s" % (tag, kind, sorted(outs), sorted(want)))
        for name, w in want.items():
            got = outs.get(name)
            same_shape = got is not None and got.shape == w.shape
            err = float(np.abs(got - w).max()) if same_shape else float("inf")
            check(same_shape and np.allclose(got, w, rtol=1e-4, atol=1e-4),
                  "%s, %s: output %s equals ONNX Runtime (max abs error %.2g)" % (tag, kind, name, err))
    # The MACs the library reports are inspect's: dense the model's, executed what runs after
    # pruning (fewer than dense for the slimmed model).
    info = json.loads(sh([a.sluice, "inspect", model, "--json"]))
    executed, dense = runs["fast"][1]
    check((executed, dense) == (info["static_macs"], info["dense_macs"]),
          "%s: executed / dense MACs %d / %d equal inspect's %d / %d" % (tag, executed, dense, info["static_macs"],
                                                                       info["dense_macs"]))
    if model == SLIM:
        check(executed < dense, "%s: fewer MACs executed than dense (%d < %d)" % (tag, executed, dense))


def install_and_consume(a):
    build = os.path.dirname(os.path.abspath(a.sluice))
    work = os.path.abspath(a.work_dir)
    prefix = os.path.join(work, "prefix")
    consumer = os.path.join(work, "consumer")
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.rmtree(consumer, ignore_errors=True)
    sh(["cmake", "--install", build, "--prefix", prefix])
    for f in ("include/sluice/sluice.h", "bin/sluice"):
        check(os.path.exists(os.path.join(prefix, f)), "installed %s" % f)
    # Only the prefix: the consumer must not find the build tree's files.
    sh(["cmake", "-S", os.path.join(ROOT, "tests", "package"), "-B", consumer, "-DCMAKE_BUILD_TYPE=Release",
        "-DCMAKE_PREFIX_PATH=" + prefix])
    sh(["cmake", "--build", consumer, "-j2"])
    exe = os.path.join(consumer, "sluice_consumer")

    for model in (MODEL, SLIM):
        consume(a, exe, model)

    r = subprocess.run([exe, os.path.join(a.work_dir, "no_such_model.onnx")], capture_output=True, text=True)
    check(r.returncode == 1 and "no_such_model.onnx" in r.stderr,
          "a missing model: exit 1 and a message naming it (%d, %r)" % (r.returncode, r.stderr.strip()))

    cli = os.path.join(prefix, "bin", "sluice")
    out = sh([cli, "--version"])
    check(out.strip() != "", "the installed CLI runs: %s" % out.strip())


if __name__ == "__main__":
    sys.exit(run_parts(__doc__, [install_and_consume]))
