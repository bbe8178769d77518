"""Prints Sluice's predicted classes for Fashion-MNIST images next to ONNX Runtime's."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_mnist import CLASSES  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True, help=".npy [N,1,28,28]")
    ap.add_argument("--sluice-logits", required=True, help=".npy written by `sluice run`")
    args = ap.parse_args()
    import onnxruntime as ort
    x = np.load(args.images)
    ours = np.load(args.sluice_logits)
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    err = float(np.abs(ours - ref).max())
    for i, (a, b) in enumerate(zip(ours.argmax(1), ref.argmax(1))):
        print(f"  image {i}: sluice says {CLASSES[a]:<12} onnxruntime says {CLASSES[b]}")
    print(f"  max |sluice - onnxruntime| over all logits: {err:.2e}")
    if err > 1e-3 * max(1.0, float(np.abs(ref).max())):
        sys.exit("sluice and onnxruntime disagree")


if __name__ == "__main__":
    main()
