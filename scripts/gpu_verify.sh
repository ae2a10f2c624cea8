#!/usr/bin/env bash
# scripts/gpu_verify.sh - what a machine with a CUDA GPU runs to verify colobench's GPU side, in
# steps that each fit a 10-minute slot (a lent GPU machine's per-command limit):
#   scripts/gpu_verify.sh build        configure and build (Release) into build-gpu
#   scripts/gpu_verify.sh tests        colobench devices, then every GPU-labelled test
#   scripts/gpu_verify.sh bench        bench/gpu_vs_torch.sh (colobench vs PyTorch, ResNet-18/50)
#   scripts/gpu_verify.sh colocation   bench/gpu_collocation.sh (1, 2, 4 trainers, processes, MPS)
#   scripts/gpu_verify.sh all          every step in turn
# Logs go to $OUT (default out/gpu-verify), one file per step. Exit status: the failing step's.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu-verify}
mkdir -p "$out"
jobs=$(nproc 2>/dev/null || echo 2)
step_build() {
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-gpu -j"$jobs" 2>&1 | tail -n 3
}
step_tests() {
  build-gpu/colobench devices
  (cd build-gpu && ctest -L gpu --output-on-failure)
}
step_bench() { bash bench/gpu_vs_torch.sh build-gpu; }
step_colocation() { bash bench/gpu_collocation.sh "$out/collocation" build-gpu; }
run() { echo "== $1"; "step_$1" 2>&1 | tee "$out/$1.log"; }
case "${1:-all}" in
  build|tests|bench|colocation) run "$1" ;;
  all) for s in build tests bench colocation; do run "$s"; done ;;
  *) echo "usage: scripts/gpu_verify.sh build|tests|bench|colocation|all" >&2; exit 2 ;;
esac
