#!/usr/bin/env bash
# One-step set-up on Debian 12: installs the Debian packages and the Python venv,
# builds Sluice, and runs the demo on the bundled model.
#   ./setup.sh            install + build + demo
#   ./setup.sh --no-demo  install + build (what ./test.sh uses)
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake
  libdnnl-dev ocl-icd-opencl-dev            # oneDNN (its CMake config demands OpenCL headers)
  libxnnpack-dev libpthreadpool-dev         # XNNPACK
  libonnx-dev libprotobuf-dev protobuf-compiler
  libgtest-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev zlib1g-dev
  python3-venv python3-torch python3-torchvision python3-onnx python3-numpy python3-matplotlib
  libonnx-testdata dataset-fashion-mnist
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# ONNX Runtime (the reference the tests compare against) is not in Debian: a venv
# on Debian's own Python, so it sees Debian's torch, with numpy pinned to Debian's.
if ! .venv/bin/python -c "import onnxruntime, torch, onnx" 2>/dev/null; then
  echo "==> creating .venv with onnxruntime"
  /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi

echo "==> building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j2 >> build.log 2>&1 || { tail -50 build.log; exit 1; }
echo "    build/sluice built"

if [ "${1:-}" != "--no-demo" ]; then
  ./models/demo.sh
fi
