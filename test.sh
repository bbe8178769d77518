#!/usr/bin/env bash
# Runs the whole test suite (installing and building first, as needed).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --no-demo
(cd build && ctest --output-on-failure --timeout 1200 -j2)

# Sluice's own kernels have one code path per vector width (16 lanes with AVX-512, 8 with
# AVX2) and -march=native compiles only this machine's. On an AVX-512 machine, also build
# the unit tests for AVX2 without AVX-512 (x86-64-v3) and run them: the path an AVX2-only
# machine would run (a 16-lane kernel compiled for AVX2 once ran 100x slower there).
if grep -qw avx512f /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo; then
  echo "== unit tests built for x86-64-v3 (AVX2, no AVX-512): build-avx2/"
  cmake -S . -B build-avx2 -DCMAKE_BUILD_TYPE=Release -DSLUICE_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3 \
    > build-avx2.log 2>&1 || { cat build-avx2.log; exit 1; }
  cmake --build build-avx2 -j2 --target sluice_unit_tests >> build-avx2.log 2>&1 || { tail -50 build-avx2.log; exit 1; }
  build-avx2/tests/sluice_unit_tests --gtest_brief=1
fi
