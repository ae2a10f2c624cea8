#!/bin/bash
# bench/gpu_collocation.sh - runs examples/gpu_collocation.yaml (copies of ResNet-18 training on
# one GPU: 1, 2 and 4 copies, as plain processes and under CUDA MPS, each point with its
# isolated baseline) into a directory and prints its sweep table (aggregate images/s against
# one copy alone, STP, ANTT, fairness, slowdowns). Reference (issue 6, not the EuroMLSys 2024
# study, which used other models on an A100-40GB): PyTorch ResNet-18 training on one H100 gave
# 1.33x (2 processes) and 2.05x (4 processes) under MPS, about 1.0x as plain processes.
#
#   bench/gpu_collocation.sh [OUT_DIR] [BUILD_DIR]   (default out/gpu_collocation-DATE, build)
# Extra colobench options through COLOBENCH_ARGS, e.g. "--set sweep.replicas=[1,2]".
# Exit status: colobench's (0 every point ran, 1 a point failed or Ctrl-C, 2 bad config or no
# GPU).
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-out/gpu_collocation-$(date +%Y%m%d-%H%M%S)}
build=${2:-$here/../build}
[ -x "$build/colobench" ] || { echo "gpu_collocation: $build/colobench not found: build colobench first" >&2; exit 2; }
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu_collocation: no CUDA GPU here (nvidia-smi lists none): this benchmark needs one" >&2
    exit 2
fi
nvidia-smi -L
# colobench prints each point's tables and, at the end, the sweep table; keep the log.
mkdir -p "$out" || exit 2
# shellcheck disable=SC2086
"$build/colobench" run "$here/../examples/gpu_collocation.yaml" -o "$out" ${COLOBENCH_ARGS:-} \
    2>&1 | tee "$out/colobench.log"
rc=$?
echo
echo "== $out/sweep.csv =="
if [ -f "$out/sweep.csv" ]; then
    sed -n '/^sweep: /,/^colobench: sweep results/p' "$out/colobench.log" | grep -v '^colobench: '
    column -s, -t < "$out/sweep.csv" 2>/dev/null || cat "$out/sweep.csv"
else
    echo "(no sweep.csv: the sweep did not start; see above)"
fi
exit $rc
