#!/usr/bin/env bash
# Runs the whole test suite (installing and building first, as needed).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --no-demo
cd build
ctest --output-on-failure --timeout 1200 -j2
