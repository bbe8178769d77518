"""Trains the small dense CNN bundled as models/fashion_cnn.onnx (the demo model).

    .venv/bin/python models/train_fashion_cnn.py --epochs 2 --out models/fashion_cnn.onnx
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402


class FashionCNN(nn.Module):
    def __init__(self):
        super().__init__()
        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
        self.features = nn.Sequential(block(1, 32), block(32, 32), nn.MaxPool2d(2),
                                      block(32, 64), block(64, 64), nn.MaxPool2d(2),
                                      block(64, 128), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(128, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="models/fashion_cnn.onnx")
    ap.add_argument("--samples-dir", default="models/samples", help="where to write a few test images as .npy")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    xtr, ytr = fashion_mnist.load("train")
    xte, yte = fashion_mnist.load("test")
    model = FashionCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr_t))
        for i in range(0, len(perm), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            if (i // 128) % 100 == 0:
                print(f"epoch {epoch + 1}/{args.epochs} step {i // 128}/{len(perm) // 128} loss {loss.item():.3f}",
                      file=sys.stderr)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(xte[i:i + 1000])).argmax(1) for i in range(0, len(xte), 1000)])
    acc = (pred.numpy() == yte).mean()
    print(f"test accuracy: {acc:.4f}")
    torch.onnx.export(model, torch.from_numpy(xte[:1]), args.out, opset_version=13, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    os.makedirs(args.samples_dir, exist_ok=True)
    for i in range(4):
        np.save(os.path.join(args.samples_dir, f"test{i}_{fashion_mnist.CLASSES[yte[i]].replace('/', '-').replace(' ', '-')}.npy"),
                xte[i:i + 1])
    np.save(os.path.join(args.samples_dir, "test_batch8.npy"), xte[:8])
    print(f"wrote {args.out} and samples in {args.samples_dir}")


if __name__ == "__main__":
    main()
