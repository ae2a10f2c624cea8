#!/bin/sh
# bench/gpu_vs_torch.sh - colobench's CUDA training step (build/bench_nn --device cuda:0) against
# PyTorch (bench/torch_gpu.py) on the same GPU: ResNet-18 and ResNet-50, batch 64, 224x224,
# fp32 (strict: PyTorch's TF32 convolutions switched off), tf32 and bf16 mixed precision.
# Prints one JSON line per run and a table of images/s and the ratio colobench / PyTorch.
#
#   bench/gpu_vs_torch.sh [BUILD_DIR]         (default build)
# Environment: PYTHON (python3), STEPS (50), WARMUP (10), DEVICE (cuda:0), MODELS
# ("resnet18 resnet50"), PRECISIONS ("fp32 tf32 bf16"), CHANNELS_LAST (1: PyTorch in
# channels_last, its faster layout on tensor cores; 0: contiguous).
# Exit status: 0 when every run worked, 1 when one failed, 2 when there is no usable GPU.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
py=${PYTHON:-python3}
steps=${STEPS:-50}
warmup=${WARMUP:-10}
device=${DEVICE:-cuda:0}
models=${MODELS:-resnet18 resnet50}
precisions=${PRECISIONS:-fp32 tf32 bf16}
cl=""
[ "${CHANNELS_LAST:-1}" = 1 ] && cl="--channels-last"

die() { echo "gpu_vs_torch: $*" >&2; exit 2; }
[ -x "$build/bench_nn" ] || die "$build/bench_nn not found: build colobench first (cmake --build build)"
command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver here (nvidia-smi not found): this benchmark needs a CUDA GPU"
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || die "nvidia-smi lists no GPU: this benchmark needs a CUDA GPU"
"$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    die "PyTorch ($py) cannot use CUDA here (not installed, or a CPU-only build)"

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failed=0
nvidia-smi -L
for m in $models; do
    for p in $precisions; do
        c="$tmp/colobench-$m-$p.json"
        t="$tmp/torch-$m-$p.json"
        "$build/bench_nn" --device "$device" --precision "$p" --model "$m" --mode train \
            --batch 64 --size 224 --steps "$steps" --warmup "$warmup" > "$c" ||
            { echo "gpu_vs_torch: bench_nn $m $p failed" >&2; failed=1; }
        "$py" "$here/torch_gpu.py" --device "$device" --precision "$p" --model "$m" --batch 64 \
            --size 224 --steps "$steps" --warmup "$warmup" $cl > "$t" ||
            { echo "gpu_vs_torch: torch_gpu.py $m $p failed" >&2; failed=1; }
        cat "$c" "$t"
    done
done
# shellcheck disable=SC2086 # the lists split into arguments
"$py" - "$tmp" $models -- $precisions <<'PY'
import json, os, sys
tmp = sys.argv[1]
rest = sys.argv[2:]
cut = rest.index("--")
models, precisions = rest[:cut], rest[cut + 1:]

def ips(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])["images_per_s"]
    except (OSError, ValueError, KeyError, IndexError):
        return None

fmt = "%-10s %-9s %14s %14s %9s"
print()
print(fmt % ("model", "precision", "colobench im/s", "pytorch im/s", "ratio"))
for m in models:
    for p in precisions:
        c = ips(os.path.join(tmp, "colobench-%s-%s.json" % (m, p)))
        t = ips(os.path.join(tmp, "torch-%s-%s.json" % (m, p)))
        r = "%.2fx" % (c / t) if c and t else "-"
        print(fmt % (m, p, "%.1f" % c if c else "failed", "%.1f" % t if t else "failed", r))
PY
exit $failed
