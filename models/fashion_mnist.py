"""Fashion-MNIST loading from Debian's dataset-fashion-mnist package (real data, no download)."""
import gzip
import os

import numpy as np

DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530


def _read_idx(name):
    path = os.path.join(DATA_DIR, name)
    if not os.path.exists(path):
        raise SystemExit(f"{path}: not found; install Debian's dataset-fashion-mnist package")
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split="train"):
    """Returns (images float32 [N,1,28,28] normalised, labels int64 [N])."""
    prefix = "train" if split == "train" else "t10k"
    x = _read_idx(f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = _read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return ((x - MEAN) / STD)[:, None, :, :], y
