#!/usr/bin/env python3
"""Static channel pruning speed: the slimmed model vs the same model unpruned, in Sluice, and
ONNX Runtime on the slimmed file, all in one run.

    .venv/bin/python bench/compare_pruned.py --models vgg16_bn,resnet18 --prune 0.5,0.7 --threads 1,2 \
        --runs 10 --warmup 2 --rounds 2 [--batch N] [--work-dir build/bench] [--markdown] [--json-out F]

Models (224x224, batch 1 or --batch, random seeded weights, exported by PyTorch in eval mode so BN folds
into the convs): vgg16_bn is VGG-16's 13 conv-BN-ReLU layers and max pools, then global average
pool + Linear(512, 1000) (as the FBS benchmark's VGG); resnet18 is torchvision's;
preact_resnet18 is ResNet-18 with pre-activation blocks (BN -> ReLU before each conv, the
network-slimming paper's ResNet form), whose stream-reading BNs cannot fold into a conv. Network
slimming is mimicked by zeroing gamma and beta of the --prune fraction of the channels (random,
seeded) of every BN; in ResNet-18 the BNs that write into one residual stream (the stem's or a
stage's downsampling BN and every block's second BN) lose the same channels, so that the
stream's dependency group can go as a whole. Columns:

  nhwc      = the slimmed model with `--planes nhwc`: every conv reads and writes NHWC, no
              resident planes between the direct kernel's convs (what those gain)
  MAC ratio = dense MACs / executed MACs (Sluice's stats: what the compacted model runs)
  speedup   = unpruned time / slimmed time (both Sluice), timed in one process in alternating
              blocks of --block runs, each after --block-warmup untimed ones (`sluice bench SLIM
              --against UNPRUNED`): the median over
              adjacent block pairs of median(unpruned block) / median(slimmed block), so both
              sides of each ratio see the same spell of a shared machine. (--unpaired: separate
              `sluice bench` processes one after the other, the ratio of their medians, as
              before stop 23.)
  eff.      = speedup / MAC ratio   (target >= 0.9)
  vs ORT    = ORT time on the slimmed file / Sluice slimmed time
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import svg_plot  # noqa: E402
from compare_ort import (add_pairing_args, bench_ort, bench_pair, bench_sluice, log, make_ort_session,  # noqa: E402
                         run_footer, write_rows)

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16BN(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016), as the network-slimming paper's ResNets:
    BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3, plus the stream (or a 1x1 projection of the first
    BN-ReLU's output). The first BN reads the residual stream, so it cannot fold into a conv."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        o = F.relu(self.bn1(x))
        sc = self.short(o) if self.short is not None else x
        return self.conv2(F.relu(self.bn2(self.conv1(o)))) + sc


class PreActResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for i, c in enumerate((64, 128, 256, 512)):
            blocks += [PreActBlock(cin, c, 1 if i == 0 else 2), PreActBlock(c, c, 1)]
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        y = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def prunable_groups(name, m):
    """Lists of BNs that must lose the same channels: one BN alone, or a ResNet stage's
    residual stream (the stem's or the downsampling BN and every block's second BN)."""
    if name in ("vgg16_bn", "preact_resnet18"):  # every BN alone (a pre-activation BN only reads the stream)
        return [[b] for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    groups = []
    for i, layer in enumerate((m.layer1, m.layer2, m.layer3, m.layer4)):
        head = m.bn1 if i == 0 else layer[0].downsample[1]
        groups.append([head] + [blk.bn2 for blk in layer])
        groups += [[blk.bn1] for blk in layer]
    return groups


def export(name, prune, out_dir, batch=1):
    path = os.path.join(out_dir, "%s_slim_p%d_g%s.onnx" % (name, round(prune * 100), "_b%d" % batch if batch > 1 else ""))
    if os.path.exists(path):
        return path
    torch.manual_seed(0)  # same weights for every prune fraction
    m = {"vgg16_bn": VGG16BN, "preact_resnet18": PreActResNet18}.get(name, torchvision.models.resnet18)()
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d):
            b.running_mean.uniform_(-0.2, 0.2)
            b.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(b.weight, 0.5, 1.5)
            nn.init.uniform_(b.bias, -0.1, 0.1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for group in prunable_groups(name, m):
            dead = torch.randperm(group[0].num_features, generator=g)[: int(prune * group[0].num_features)]
            for b in group:
                b.weight[dead] = 0
                b.bias[dead] = 0
    m.eval()
    torch.onnx.export(m, torch.randn(batch, 3, 224, 224), path, opset_version=13, input_names=["image"],
                      output_names=["logits"])
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sluice", default=os.path.join(REPO, "build", "sluice"))
    ap.add_argument("--models", default="vgg16_bn,resnet18")
    ap.add_argument("--prune", default="0.5,0.7", help="fractions of prunable channels zeroed")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1, help="images per run (the files are exported for it)")
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench"))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json-out")
    add_pairing_args(ap, "slimmed and unpruned")
    ap.add_argument("--plot", metavar="FILE.svg", help="also draw speedup against MAC ratio as an SVG chart")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out_dir = os.path.join(a.work_dir, "pruned")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for m in a.models.split(","):
        log("exporting %s ..." % m)
        base = export(m, 0.0, out_dir, a.batch)
        for p in (float(v) for v in a.prune.split(",")):
            path = export(m, p, out_dir, a.batch)
            for t in (int(v) for v in a.threads.split(",")):
                slim, nhwc, full, ort_t, ratios, stats = [], [], [], [], [], None
                sess = make_ort_session(path, t)
                for r in range(a.rounds):
                    log("%s prune=%.2f threads=%d round %d/%d" % (m, p, t, r + 1, a.rounds))
                    stats, ts, tf, rs = bench_pair(a.sluice, path, t, a.runs, a.warmup, ["--against", base], a)
                    slim += ts
                    full += tf
                    ratios += rs
                    # The same slimmed file with every conv on NHWC (no resident planes).
                    nhwc += bench_sluice(a.sluice, path, t, a.runs, a.warmup, ["--planes", "nhwc"])["times_ms"]
                    ort_t += bench_ort(sess, a.runs, a.warmup)["times_ms"]
                row = {"model": m, "prune": p, "threads": t, "batch": a.batch, "slim_ms": statistics.median(slim),
                       "slim_nhwc_ms": statistics.median(nhwc),
                       "unpruned_ms": statistics.median(full), "ort_ms": statistics.median(ort_t),
                       "dense_macs": stats["dense_macs"], "executed_macs": stats["executed_macs"]}
                row["mac_ratio"] = row["dense_macs"] / row["executed_macs"]
                row["speedup"] = statistics.median(ratios)
                row["efficiency"] = row["speedup"] / row["mac_ratio"]
                row["vs_ort"] = row["ort_ms"] / row["slim_ms"]
                rows.append(row)
                log("  slimmed %.2f ms (NHWC planes %.2f), unpruned %.2f ms, ORT %.2f ms; MAC ratio %.2f, speedup %.2f (%.0f%%)" % (
                    row["slim_ms"], row["slim_nhwc_ms"], row["unpruned_ms"], row["ort_ms"], row["mac_ratio"],
                    row["speedup"], 100 * row["efficiency"]))
    if a.markdown:
        print("| model | pruned | threads | slimmed (ms) | slimmed, `--planes nhwc` (ms) | unpruned (ms) | ORT slimmed file (ms) | MAC ratio | speedup | speedup / MAC ratio | ORT / slimmed |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print("| %s | %.0f%% | %d | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f |" % (
                r["model"], 100 * r["prune"], r["threads"], r["slim_ms"], r["slim_nhwc_ms"], r["unpruned_ms"],
                r["ort_ms"], r["mac_ratio"], r["speedup"], r["efficiency"], r["vs_ort"]))
        print()
        print(run_footer(a, "224x224, batch %d" % a.batch))
    write_rows(rows, a)
    if a.plot and rows:
        log("plot: " + svg_plot.speedup_vs_mac_ratio(
            a.plot, rows, "speedup", "Slimmed vs unpruned in Sluice (a point per pruning level)",
            run_footer(a, "224x224, batch %d" % a.batch)))


if __name__ == "__main__":
    main()
