#!/usr/bin/env python3
"""`sluice eval` on the committed FBS models and real Fashion-MNIST test images, checked
against ONNX Runtime and `sluice run` on the same images: the accuracy is what ORT's outputs
give, the executed MACs per image (mean/min/max) and the per-layer densities are what the
per-sample run stats say, the SVG plot has one pair of bars per recognised gate, the density
override and `--gating off` do what they say, and bad input is refused with exit 1 or 2 and
one clear line.

    .venv/bin/python tests/e2e/test_eval.py --sluice build/sluice --work-dir build/e2e_eval
"""
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "models"))
import fashion_mnist  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import check, finish, parse_args, run_sluice  # noqa: E402


def run_sluice_nocheck(a, *args):
    return run_sluice(a, *args, check_ok=False)


LIMIT = 300




def eval_json(a, model, tag, *extra):
    j = os.path.join(a.work_dir, tag + ".json")
    svg = os.path.join(a.work_dir, tag + ".svg")
    p = run_sluice_nocheck(a, "eval", model, "--limit", str(LIMIT), "--batch", "64", "--json", j, "--plot", svg,
               "--progress", "off", "--threads", "2", *extra)
    if p.returncode != 0:
        raise AssertionError("sluice eval %s %s -> exit %d: %s" % (model, " ".join(extra), p.returncode, p.stderr))
    return json.load(open(j)), svg, p.stdout


def run_stats(a, model, x, *extra):
    xin = os.path.join(a.work_dir, "x.npy")
    np.save(xin, x)
    st = os.path.join(a.work_dir, "stats.json")
    out = os.path.join(a.work_dir, "out")
    p = run_sluice_nocheck(a, "run", model, "--input", "image=" + xin, "--output-dir", out, "--stats-json", st, *extra)
    assert p.returncode == 0, p.stderr
    return np.load(os.path.join(out, "logits.npy")), json.load(open(st))


def test_model(a, name, x, y, extra=()):
    model = os.path.join(REPO, "models", "fbs", name)
    res, svg, stdout = eval_json(a, model, name + "".join(extra).replace("-", "_"), *extra)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"image": x})[0]
    pred = ref.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:]
    near_ties = int((top2[:, 1] - top2[:, 0] < 1e-3).sum())
    ort_correct = int((pred == y).sum())
    tag = "%s %s" % (name, " ".join(extra))
    if not extra:  # ORT runs the file as exported: no density override
        check(abs(res["correct"] - ort_correct) <= near_ties,
              "%s: eval counts %d correct, ORT's outputs give %d (near ties %d)" % (tag, res["correct"], ort_correct, near_ties))
    check(res["images"] == LIMIT and abs(res["accuracy"] - res["correct"] / LIMIT) < 1e-12, tag + ": accuracy = correct / images")
    check("accuracy: %.2f%%" % (100 * res["accuracy"]) in stdout, tag + ": accuracy printed")

    logits, st = run_stats(a, model, x, *extra)
    check(int((logits.argmax(1) == y).sum()) == res["correct"], tag + ": eval and run agree on the predictions")
    ex = [s["executed_macs"] for s in st["samples"]]
    m = res["executed_macs_per_image"]
    check(math.isclose(m["mean"], float(np.mean(ex)), rel_tol=1e-9) and m["min"] == min(ex) and m["max"] == max(ex),
          "%s: executed MACs per image mean/min/max %.0f/%d/%d = run stats %.0f/%d/%d" % (
              tag, m["mean"], m["min"], m["max"], np.mean(ex), min(ex), max(ex)))
    check(res["dense_macs_per_image"] == st["samples"][0]["dense_macs"], tag + ": dense MACs per image")
    gated = [l for l in st["layers"] if "active_out_channels" in l]
    eval_gated = [l for l in res["layers"] if l["gated"]]
    ok = len(gated) == len(eval_gated) > 0
    for g, e in zip(gated, eval_gated):
        dens = [s["active_out_channels"] / g["out_channels"] for s in g["samples"]]
        ok &= g["name"] == e["name"] and math.isclose(e["out_density"]["mean"], float(np.mean(dens)), rel_tol=1e-9)
        ok &= e["out_density"]["min"] == min(dens) and e["out_density"]["max"] == max(dens)
    check(ok, "%s: per-layer output density of %d gated layers = run stats" % (tag, len(gated)))

    root = ET.parse(svg).getroot()
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    out_bars = [t for t in titles if "output density" in t]
    check(len(out_bars) == len(gated) and all(g["name"] in t for g, t in zip(gated, out_bars)),
          "%s: the plot has one output-density bar per gated layer (%d)" % (tag, len(out_bars)))
    return res


def make_model(path, shape, name="image"):
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Flatten", [name], ["logits"])], "g", [x], [out])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_bad_input(a):
    model = os.path.join(REPO, "models", "fbs", "mcifar_fbs_d50.onnx")
    empty = os.path.join(a.work_dir, "empty_dir")
    os.makedirs(empty, exist_ok=True)
    corrupt = os.path.join(a.work_dir, "corrupt_dir")
    os.makedirs(corrupt, exist_ok=True)
    with open(os.path.join(corrupt, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(b"this is not gzip at all")
    with gzip.open(os.path.join(corrupt, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))  # promises 5 labels, holds 2
    truncated = os.path.join(a.work_dir, "truncated_dir")
    os.makedirs(truncated, exist_ok=True)
    src = fashion_mnist.DATA_DIR
    for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        data = gzip.open(os.path.join(src, n)).read()
        with gzip.open(os.path.join(truncated, n), "wb") as f:
            f.write(data[:len(data) - (1000 if "images" in n else 0)])
    bomb = os.path.join(a.work_dir, "bomb_dir")  # 10 images declared, 64 MB of zeros behind them (a ~64 KB file)
    os.makedirs(bomb, exist_ok=True)
    with gzip.open(os.path.join(bomb, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28]))
        for _ in range(64):
            f.write(bytes(1 << 20))
    with gzip.open(os.path.join(bomb, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(10))
    # A well-formed split of no images (eval gave "accuracy: -nan%" and exit 0).
    no_images = os.path.join(a.work_dir, "no_images_dir")
    os.makedirs(no_images, exist_ok=True)
    with gzip.open(os.path.join(no_images, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28]))
    with gzip.open(os.path.join(no_images, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 0]))
    # A split smaller than --limit: all of it is evaluated, and a note says so.
    small = os.path.join(a.work_dir, "small_dir")
    os.makedirs(small, exist_ok=True)
    with gzip.open(os.path.join(small, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(range(256)) * 15 + bytes(5 * 784 - 3840))
    with gzip.open(os.path.join(small, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5]))
    p = run_sluice_nocheck(a, "eval", model, "--data-dir", small, "--limit", "20", "--plot", "-", "--progress", "off")
    check(p.returncode == 0 and "--limit 20, but the test split has 5 images" in p.stderr and "5 images" in p.stderr,
          "eval --limit past the split's size evaluates all of it and says so (exit %d: %r)" % (p.returncode, p.stderr[-300:]))
    # ops --json: the same list as plain `ops`.
    plain = run_sluice_nocheck(a, "ops").stdout.split()
    listed = json.loads(run_sluice_nocheck(a, "ops", "--json").stdout)
    check(listed == plain and "Conv" in listed and not any(n.startswith("Sluice") for n in listed),
          "ops --json lists the %d operators of plain ops" % len(plain))
    wrong = os.path.join(a.work_dir, "rgb32.onnx")
    make_model(wrong, ["N", 3, 32, 32])
    static = os.path.join(a.work_dir, "batch1.onnx")
    make_model(static, [1, 1, 28, 28])
    dynhw = os.path.join(a.work_dir, "dynamic_hw.onnx")
    make_model(dynhw, ["N", 1, "H", "W"])
    image = os.path.join(a.work_dir, "image_1x1x28x28.npy")
    np.save(image, np.zeros((1, 1, 28, 28), np.float32))
    # A '=' in the input file's path, with no input of that name: the whole spec is the file.
    eqdir = os.path.join(a.work_dir, "eq=dir")
    os.makedirs(eqdir, exist_ok=True)
    np.save(os.path.join(eqdir, "x.npy"), np.zeros((1, 1, 28, 28), np.float32))
    p = subprocess.run([os.path.abspath(a.sluice), "run", model, "-i", "eq=dir/x.npy", "-o", os.path.join(a.work_dir, "eq_out")],
                       capture_output=True, text=True, cwd=a.work_dir)
    check(p.returncode == 0, "run -i eq=dir/x.npy reads that file (%s)" % p.stderr.strip())
    # Options --reference does not use are said to have no effect.
    p = run_sluice_nocheck(a, "run", model, "-i", image, "-o", os.path.join(a.work_dir, "ref_out"), "--reference",
                           "--sparse", "always")
    check(p.returncode == 0 and "--sparse always has no effect with --reference" in p.stderr,
          "run --reference --sparse always notes that --sparse has no effect (%s)" % p.stderr.strip())
    # README's first commands in a fresh directory: run -o out --stats-json out/stats.json creates
    # out before the stats file is checked; inspect takes a dynamic batch as 1, or --batch.
    fresh = os.path.join(a.work_dir, "fresh_out")
    shutil.rmtree(fresh, ignore_errors=True)
    p = run_sluice_nocheck(a, "run", model, "-i", "image=" + image, "-o", fresh, "--stats-json", os.path.join(fresh, "stats.json"))
    check(p.returncode == 0 and sorted(os.listdir(fresh)) == ["logits.npy", "stats.json"],
          "run -o DIR --stats-json DIR/stats.json in a new DIR writes both (exit %d: %r)" % (p.returncode, p.stderr[-200:]))
    gone = os.path.join(a.work_dir, "fresh_out_failed")
    shutil.rmtree(gone, ignore_errors=True)
    p = run_sluice_nocheck(a, "run", model, "-i", "image=" + image, "-o", os.path.join(gone, "a", "b"), "--stats-json",
                           "/nonexistent_dir/s.json")
    check(p.returncode == 1 and not os.path.exists(gone),
          "a run that fails leaves no output directory it made behind, parents included (exit %d, exists: %s)" % (
              p.returncode, os.path.exists(gone)))
    for extra, shape in (((), [1, 10]), (("-b", "4"), [4, 10])):
        p = run_sluice_nocheck(a, "inspect", model, "--json", *extra)
        j = json.loads(p.stdout) if p.returncode == 0 else {}
        outs = [o for n in j.get("nodes", []) for o in n.get("outputs", []) if o.get("name") == "logits"]
        check(p.returncode == 0 and len(outs) == 1 and outs[0].get("shape") == shape,
              "inspect %s on a dynamic-batch model plans batch %d (exit %d: %r)" % (
                  " ".join(extra), shape[0], p.returncode, (p.stderr[-200:], outs[:1])))
    # --shape gives bench what the model leaves open; the run is timed at that shape.
    p = run_sluice_nocheck(a, "bench", dynhw, "-n", "1", "-w", "0", "--shape", "image=2x1x8x8", "--json", "--sparse", "off",
                           "--planes", "nhwc")
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    check(p.returncode == 0 and j["runs"] == 1 and j.get("input_shapes") == {"image": [2, 1, 8, 8]}
          and (j.get("sparse"), j.get("planes"), j.get("reference")) == ("off", "nhwc", False),
          "bench --shape image=2x1x8x8 runs a model with dynamic H and W; --json records the shape timed and the "
          "options (exit %d: %r)" % (p.returncode, (p.stderr[-200:], {k: j.get(k) for k in ("input_shapes", "sparse", "planes")})))
    # bench --against: both models timed in alternating blocks, the ratio per block pair.
    p = run_sluice_nocheck(a, "bench", model, "--against", static, "-n", "4", "--block", "2", "--block-warmup", "1", "-w",
                           "1", "--json")
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    b = j.get("against", {})
    ratios = [tb / ta for ta, tb in zip(j.get("block_medians_ms", []), b.get("block_medians_ms", []))]
    check(p.returncode == 0 and len(j["times_ms"]) == 4 and len(b.get("times_ms", [])) == 4 and b["model"] == static
          and len(j["ratio_blocks"]) == 2 and all(abs(r - q) <= 1e-9 * q for r, q in zip(j["ratio_blocks"], ratios))
          and min(ratios) <= j["ratio_median"] <= max(ratios) and j["executed_macs"] > 0 and "executed_macs" in b
          and j["block_warmup"] == 1,
          "bench --against: 2 block pairs of 2 runs after 1 untimed, each ratio the B block's median over A's "
          "(exit %d: %r)" % (
              p.returncode, (p.stderr[-200:], {k: j.get(k) for k in ("ratio_blocks", "ratio_median")})))
    # Models whose dynamic inputs have other names: each --shape goes to the model that has it.
    other = os.path.join(a.work_dir, "dynamic_hw_other_name.onnx")
    make_model(other, ["N", 1, "H", "W"], name="data")
    p = run_sluice_nocheck(a, "bench", dynhw, "--against", other, "-s", "image=1x1x8x8", "-s", "data=2x1x4x4",
                           "-n", "2", "--json")
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    check(p.returncode == 0 and j["runs"] == 2 and j["against"]["model"] == other and j["block_warmup"] == 5
          and j.get("input_shapes") == {"image": [1, 1, 8, 8]} and j["against"].get("input_shapes") == {"data": [2, 1, 4, 4]},
          "bench --against: --shape image=... and data=... each given to the model that has the input, and each side's "
          "JSON records its shapes (exit %d: %r)" % (
              p.returncode, p.stderr[-300:]))
    # --against-option: the same file alongside with gating off, which runs every MAC.
    p = run_sluice_nocheck(a, "bench", model, "--against-option", "gating=off", "-n", "2", "--block", "1", "-w", "0",
                           "--json")
    j = json.loads(p.stdout) if p.returncode == 0 else {}
    b = j.get("against", {})
    check(p.returncode == 0 and b.get("model") == model and b.get("label", "").endswith("with gating=off")
          and b["executed_macs"] == j["dense_macs"] > j["executed_macs"] > 0
          and (j.get("gating"), b.get("gating"), j.get("batch"), b.get("sparse")) == (True, False, 1, "auto"),
          "bench --against-option gating=off: the same file, all %s MACs against the gated %s (exit %d: %r)" % (
              j.get("dense_macs"), j.get("executed_macs"), p.returncode, p.stderr[-200:]))
    # A positional --input after a named one goes to the next input not given yet.
    two = os.path.join(a.work_dir, "two_inputs.onnx")
    g = helper.make_graph([helper.make_node("Sub", ["a", "b"], ["y"])], "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), two)
    fa, fb, out = (os.path.join(a.work_dir, n) for n in ("a.npy", "b.npy", "two_out"))
    np.save(fa, np.ones((2, 3), np.float32))
    np.save(fb, np.full((2, 3), 3, np.float32))
    p = run_sluice_nocheck(a, "run", two, "-i", "a=" + fa, "-i", fb, "-o", out)
    check(p.returncode == 0 and np.array_equal(np.load(os.path.join(out, "y.npy")), np.full((2, 3), -2, np.float32)),
          "run -i a=A -i B: the positional file goes to input b, not again to a (exit %d: %r)" % (
              p.returncode, p.stderr[-200:]))
    # A weight the file also lists among the graph's inputs (keep_initializers_as_inputs=True).
    kiai = os.path.join(a.work_dir, "initializer_as_input.onnx")
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [1.0] * 6)
    g = helper.make_graph([helper.make_node("Add", ["a", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "w")],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), kiai)
    cases = [
        (["run", kiai, "-i", "a=" + fa, "-i", "w=" + fb], 2, "'w' is a constant of the model"),
        (["eval", model, "--data-dir", "/nonexistent/fmnist"], 1, "dataset-fashion-mnist"),
        (["eval", model, "--data-dir", empty], 1, "not found"),
        (["eval", model, "--data-dir", corrupt], 1, "t10k-images-idx3-ubyte.gz"),
        (["eval", model, "--data-dir", truncated], 1, "truncated"),
        (["eval", model, "--data-dir", bomb], 1, "IDX header declares 7840 bytes of data, the file holds more"),
        (["eval", model, "--data-dir", no_images], 1, "holds no images: nothing to evaluate"),
        # Write errors are errors (they were ignored: exit 0, no file, no word).
        (["eval", model, "--limit", "5", "--plot", "/dev/full"], 1, "/dev/full: cannot write the plot"),
        (["eval", model, "--limit", "5", "--plot", "-", "--json", "/dev/full"], 1, "/dev/full: cannot write the JSON results"),
        (["run", model, "-i", "image=" + image, "-o", a.work_dir, "--stats-json", "/dev/full"], 1, "write error (disk full?)"),
        (["eval", wrong, "--limit", "5"], 1, "images are [1, 28, 28]"),
        (["eval", model, "--data", "imagenet"], 2, "imagenet"),
        (["eval", model, "--limit", "-3"], 2, "--limit: -3 is negative"),
        (["eval", model, "--batch", "0"], 2, "--batch: 0 is not positive"),
        (["eval", model, "--density", "0"], 2, "--density: 0 is not a density in (0, 1]"),
        (["eval", model, "--density", "1.5"], 2, "--density: 1.5 is not a density"),
        (["run", model, "--input", "x.npy", "--density", "abc"], 2, "--density: abc is not a number"),
        (["bench", model, "--density", "-0.5"], 2, "--density: -0.5 is not a density"),
        (["bench", model, "--density", "0.5x"], 2, "--density: 0.5x is not a number"),
        (["eval", "/nonexistent/model.onnx"], 1, "/nonexistent/model.onnx"),
        (["inspect", model, "--shape", "image=1x1x28x28abc"], 2, "'28abc' is not a dimension"),
        (["inspect", model, "--shape", "image=1x1x28x28x"], 2, "ends in 'x' with no dimension after it"),
        (["run", model, "--input", "image="], 2, "--input image=: no file after '='"),
        # Output paths that cannot be written are refused before the work, with the reason.
        (["run", model, "-i", "image=" + image, "--stats-json", "/nonexistent_dir/s.json"], 1,
         "/nonexistent_dir/s.json: cannot write the stats file: No such file or directory"),
        (["eval", model, "--limit", "5", "--plot", "/nonexistent_dir/x.svg"], 1,
         "/nonexistent_dir/x.svg: cannot write the plot"),
        (["inspect", model, "--shape", "foo=1"], 2, "no input named 'foo'"),
        (["inspect", dynhw], 1, "has dynamic shape [?, 1, ?, ?]; give its concrete shape (Session::inspect's input_shapes; on the command line: --shape image=1x1x1x1)"),
        # inspect takes --batch as bench does; where no input has a dynamic batch it is refused.
        (["inspect", static, "--batch", "4"], 2, "inspect: --batch 4, but no input of %s has a dynamic batch with its other dimensions fixed, other than those --input gives ('image' [1, 1, 28, 28])" % static),
        (["inspect", model, "--batch", "4", "--shape", "image=2x1x28x28"], 2, "give the batch in --shape, not also with --batch"),
        (["bench", model, "--threads", "100000"], 1, "more than 1024"),
        (["bench", static, "--batch", "4"], 2, "no input of %s has a dynamic first dimension ('image' is [1, 1, 28, 28])" % static),
        (["bench", model, "--batch", "4", "--input", "image=x.npy"], 2, "with --input the batch is the .npy file's"),
        (["bench", dynhw, "-n", "1"], 2, "input 'image' has dynamic dimensions [?, 1, ?, ?] beyond the batch: give them with --shape"),
        (["bench", dynhw, "--shape", "image=1x2x8x8"], 2, "[1, 2, 8, 8] does not fit the model's input 'image' [?, 1, ?, ?]"),
        (["bench", dynhw, "--shape", "img=1x1x8x8"], 2, "no input named 'img'"),
        (["run", model, "-i", "image=" + image, "-i", "image=" + image], 2, "input 'image' is given twice"),
        (["bench", dynhw, "-s", "image=1x1x8x8", "-s", "image=1x1x9x9"], 2, "input 'image' is given twice"),
        (["bench", dynhw, "-s", "image=0x1x8x8"], 2, "is empty (a dimension of 0): nothing to time"),
        (["run", model, "--input", "image=/dev/zero"], 1, "not a regular file"),
        (["bench", model, "--against", static, "--input", "image=" + image], 2, "generated inputs only"),
        (["bench", model, "--against", static, "--profile"], 2, "--profile times one model"),
        (["bench", model, "--against", "/nonexistent/other.onnx"], 1, "/nonexistent/other.onnx"),
        (["bench", model, "--against", static, "--block", "0"], 2, "--block: 0 is not positive"),
        (["bench", model, "--against-option", "gating=maybe"], 2, "--against-option gating=maybe: gating takes on or off"),
        (["bench", model, "--against-option", "threads=2"], 2, "no option 'threads' (KEY=VALUE with KEY one of"),
        (["bench", model, "--against-option", "density=1.5"], 2, "density takes a density in (0, 1]"),
        (["bench", model, "--against-option", "gating=on"], 2, "gating=on: already so for the first side"),
        (["bench", model, "--against-option", "sparse=off", "--against-option", "sparse=off"], 2, "(given twice?)"),
        (["bench", model, "--block", "2"], 2, "--block applies with --against or --against-option only"),
        (["bench", model, "--block-warmup", "2"], 2, "--block-warmup applies with --against or --against-option only"),
        (["bench", model, "--against", static, "--block-warmup", "-1"], 2, "--block-warmup"),
        (["bench", model, "--against", static, "-n", "3", "--block", "4"], 2, "--block 4 is more than --runs 3"),
        (["bench", dynhw, "--against", static, "-s", "img=1x1x8x8"], 2, "neither %s nor %s has an input named 'img'" % (dynhw, static)),
    ]
    for args, code, needle in cases:
        p = run_sluice_nocheck(a, *args, "--progress", "off") if args[0] == "eval" else run_sluice_nocheck(a, *args)
        lines = [l for l in p.stderr.strip().splitlines() if l]
        check(p.returncode == code and len(lines) >= 1 and needle in lines[-1] and "sluice: error" in lines[-1],
              "refused with exit %d mentioning %r: sluice %s -> exit %d, %r" % (
                  code, needle, " ".join(args[1:] if args[0] != "eval" else args), p.returncode, lines[-1:] ))
    # A node name that is not UTF-8 (ONNX's proto2 strings hold any bytes): the JSON writers
    # replace the bad bytes (they failed with nlohmann's "invalid UTF-8 byte", naming nothing).
    w = np.random.RandomState(0).rand(4, 3, 3, 3).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "W")])
    raw = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    bad_name = os.path.join(a.work_dir, "non_utf8_name.onnx")
    with open(bad_name, "wb") as f:
        f.write(raw.replace(b"\x1a\x04conv", b"\x1a\x04c\xff\xfev"))
    p = run_sluice_nocheck(a, "inspect", bad_name, "--json")
    check(p.returncode == 0 and "conv" not in p.stdout and json.loads(p.stdout) is not None,
          "inspect --json of a node named with non-UTF-8 bytes: exit %d, %r" % (p.returncode, p.stderr.strip()[-200:]))
    # A full standard output too (`bench --json > /dev/full` exited 0).
    with open("/dev/full", "w") as full:
        p = subprocess.run([a.sluice, "bench", model, "-n", "1", "--json"], stdout=full, stderr=subprocess.PIPE, text=True)
    check(p.returncode == 1 and "cannot write to standard output" in p.stderr,
          "bench --json > /dev/full is an error: exit %d, %r" % (p.returncode, p.stderr.strip()))


def main():
    a = parse_args(__doc__)
    xte, yte = fashion_mnist.load("test")
    x, y = xte[:LIMIT], yte[:LIMIT]
    r50 = test_model(a, "mcifar_fbs_d50.onnx", x, y)
    r100 = test_model(a, "mcifar_fbs_d100.onnx", x, y)
    r25 = test_model(a, "mcifar_fbs_d100.onnx", x, y, ("--density", "0.25"))
    check(r25["executed_macs_per_image"]["mean"] < 0.5 * r100["executed_macs_per_image"]["mean"],
          "--density 0.25 on the d=1.0 model runs < half its MACs (%.0f vs %.0f)" % (
              r25["executed_macs_per_image"]["mean"], r100["executed_macs_per_image"]["mean"]))
    ok = all(l["out_density"]["max"] <= math.ceil(0.25 * l["out_channels"]) / l["out_channels"] + 1e-12
             for l in r25["layers"] if l["gated"])
    check(ok, "--density 0.25: no gated layer computes more than ceil(0.25 C) channels")
    off, _, _ = eval_json(a, os.path.join(REPO, "models", "fbs", "mcifar_fbs_d50.onnx"), "off", "--gating", "off")
    check(off["correct"] == r50["correct"], "--gating off: same predictions (%d vs %d correct)" % (off["correct"], r50["correct"]))
    check(off["executed_macs_per_image"]["min"] == off["executed_macs_per_image"]["max"] == off["dense_macs_per_image"],
          "--gating off: every image runs the dense MACs")
    check(r50["executed_macs_per_image"]["max"] < r50["dense_macs_per_image"], "d=0.5: every image skips MACs")
    test_bad_input(a)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
