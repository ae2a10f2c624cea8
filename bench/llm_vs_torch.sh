#!/usr/bin/env bash
# bench/llm_vs_torch.sh - colobench's LLM decode and prefill (bench_llm) against PyTorch running
# transformers' implementation of the same shapes (bench/llm_vs_torch.py), same machine, same
# run, same thread count and options; prints both tables and the ratios colobench / PyTorch.
#
# Usage: bench/llm_vs_torch.sh [--build DIR] [--python PY] [--compile] [--rounds N] [ARGS...]
#   --build   the build directory holding bench_llm (default: build)
#   --python  the interpreter with torch and transformers (default: .venv-bench/bin/python,
#             made by scripts/setup.sh --bench)
#   --compile also try torch.compile on the PyTorch side (minutes of compilation on 2 cores)
#   --rounds  run the pair N times, alternating (default 1): this machine's speed drifts by a
#             third within minutes, so one side's run can land in a slow spell; with N > 1
#             each figure is the median over the rounds and the ratio the median of the
#             rounds' ratios (each round's two sides minutes apart, not a quarter hour)
#   ARGS      passed to both sides: --model --precision --threads --prompt --steps --warmup
#             --batch (defaults: qwen2.5-0.5b, f32,bf16, all CPUs, 128, 32, 2, 1,8,32)
# Both sides run with glibc told to keep freed memory (as bench/nn_vs_torch.py does for PyTorch).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build"
py="$root/.venv-bench/bin/python"
torch_extra=()
args=()
rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --compile) torch_extra+=(--compile); shift ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -x "$build/bench_llm" ] || { echo "llm_vs_torch: no $build/bench_llm (build it first)" >&2; exit 2; }
[ -x "$py" ] || { echo "llm_vs_torch: no $py (scripts/setup.sh --bench)" >&2; exit 2; }
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "llm_vs_torch: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "llm_vs_torch: round $r of $rounds, $(date -u +%TZ), load $(cut -d' ' -f1 /proc/loadavg)"
  "$build/bench_llm" "${args[@]}" | tee "$tmp/cb$r.txt"
  "$py" "$root/bench/llm_vs_torch.py" "${args[@]}" "${torch_extra[@]}" | tee "$tmp/pt$r.txt"
done
# Ratios of the rows both print (precision, metric): colobench / PyTorch; over rounds, medians.
/usr/bin/python3 - "$tmp" "$rounds" <<'PY'
import statistics
import sys

def rows(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 4 and f[3] in ("tok/s",) and f[0] in ("f32", "bf16"):
            out[(f[0], f[1])] = float(f[2])
    return out

tmp, n = sys.argv[1], int(sys.argv[2])
runs = [(rows(f"{tmp}/cb{r}.txt"), rows(f"{tmp}/pt{r}.txt")) for r in range(1, n + 1)]
print(f"{'precision':<9} {'metric':<12} {'colobench':>11} {'pytorch':>11} {'ratio':>7}"
      + ("  ratios by round" if n > 1 else ""))
for key in runs[0][1]:
    if all(key in cb and key in pt for cb, pt in runs):
        c = statistics.median(cb[key] for cb, _ in runs)
        p = statistics.median(pt[key] for _, pt in runs)
        ratios = [cb[key] / pt[key] for cb, pt in runs]
        extra = "  " + " ".join(f"{x:.2f}" for x in ratios) if n > 1 else ""
        print(f"{key[0]:<9} {key[1]:<12} {c:>11.2f} {p:>11.2f} {statistics.median(ratios):>7.2f}{extra}")
PY
