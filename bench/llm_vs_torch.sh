#!/usr/bin/env bash
# bench/llm_vs_torch.sh - colobench's LLM decode and prefill (bench_llm) against PyTorch running
# transformers' implementation of the same shapes (bench/llm_vs_torch.py), same machine, same
# run, same thread count and options; prints both tables and the ratios colobench / PyTorch.
#
# Usage: bench/llm_vs_torch.sh [--build DIR] [--python PY] [--compile] [ARGS...]
#   --build   the build directory holding bench_llm (default: build)
#   --python  the interpreter with torch and transformers (default: .venv-bench/bin/python,
#             made by scripts/setup.sh --bench)
#   --compile also try torch.compile on the PyTorch side (minutes of compilation on 2 cores)
#   ARGS      passed to both sides: --model --precision --threads --prompt --steps --warmup
#             --batch (defaults: qwen2.5-0.5b, f32,bf16, all CPUs, 128, 32, 2, 1,8,32)
# Both sides run with glibc told to keep freed memory (as bench/nn_vs_torch.py does for PyTorch).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build"
py="$root/.venv-bench/bin/python"
torch_extra=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --compile) torch_extra+=(--compile); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -x "$build/bench_llm" ] || { echo "llm_vs_torch: no $build/bench_llm (build it first)" >&2; exit 2; }
[ -x "$py" ] || { echo "llm_vs_torch: no $py (scripts/setup.sh --bench)" >&2; exit 2; }
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "llm_vs_torch: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench_llm" "${args[@]}" | tee "$tmp/cb.txt"
"$py" "$root/bench/llm_vs_torch.py" "${args[@]}" "${torch_extra[@]}" | tee "$tmp/pt.txt"
# Ratios of the rows both print (precision, metric): colobench / PyTorch.
/usr/bin/python3 - "$tmp/cb.txt" "$tmp/pt.txt" <<'PY'
import sys

def rows(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 4 and f[3] in ("tok/s",) and f[0] in ("f32", "bf16"):
            out[(f[0], f[1])] = float(f[2])
    return out

cb, pt = rows(sys.argv[1]), rows(sys.argv[2])
print(f"{'precision':<9} {'metric':<12} {'colobench':>11} {'pytorch':>11} {'ratio':>7}")
for key in pt:
    if key in cb:
        print(f"{key[0]:<9} {key[1]:<12} {cb[key]:>11.2f} {pt[key]:>11.2f} {cb[key] / pt[key]:>7.2f}")
PY
