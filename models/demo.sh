#!/usr/bin/env bash
# The main job on the bundled model: classify real Fashion-MNIST test images with
# Sluice, check the answer against ONNX Runtime on the same file, show the plan and speed.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=build/sluice
MODEL=models/fashion_cnn.onnx
OUT=build/demo
mkdir -p "$OUT"

echo "==> sluice run $MODEL on 8 Fashion-MNIST test images"
$SLUICE run "$MODEL" --input image=models/samples/test_batch8.npy --output-dir "$OUT" --stats-json "$OUT/stats.json"
.venv/bin/python models/show_predictions.py --model "$MODEL" --images models/samples/test_batch8.npy \
    --sluice-logits "$OUT/logits.npy"

echo "==> sluice inspect $MODEL"
$SLUICE inspect "$MODEL" --shape image=1x1x28x28

echo "==> sluice bench $MODEL (batch 1, 2 threads)"
$SLUICE bench "$MODEL" --threads 2 --runs 200 --warmup 20

echo "==> sluice eval models/fbs/mcifar_fbs_d50.onnx: FBS channel gating at density 0.5 on 2000 test images"
$SLUICE eval models/fbs/mcifar_fbs_d50.onnx --limit 2000 --plot "$OUT/fbs_d50_density.svg" --json "$OUT/fbs_d50_eval.json"
