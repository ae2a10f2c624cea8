#!/usr/bin/env bash
# bench/gpu_vs_torch.sh - colobench's CUDA training step (build/bench_nn --device cuda:0) against
# PyTorch (bench/torch_gpu.py) on the same GPU: ResNet-18 and ResNet-50, batch 64, 224x224,
# fp32 (strict: PyTorch's TF32 convolutions switched off), tf32 and bf16 mixed precision.
#
# Like with like. colobench's executor always takes its input from the host: every step copies
# the caller's batch into pinned staging, then to the device, then computes. PyTorch therefore
# runs twice per configuration:
#   host input    a pinned host batch copied to the GPU inside every timed step
#                 (.to(device, non_blocking=True): a DataLoader with pin_memory=True); the same
#                 work as colobench's step, so the ratio colobench / PyTorch is taken here;
#   device input  the batch made once on the GPU and reused (no copy at all): PyTorch's model step
#                 alone, compared with colobench's device compute time (derived, below).
# Both sides wait for the device by spinning (bench_nn --wait spin; PyTorch's default).
#
# Columns of the table it prints at the end:
#   colobench host in    bench_nn images_per_s: batch / median host wall time of a step (the
#                        staging copy, the host-to-device copy, the step and the wait)
#   PyTorch host in      torch_gpu.py --input host images_per_s: batch / median CUDA-event time of
#                        a step, the host-to-device copy included
#   ratio                colobench host in / PyTorch host in: the like-with-like comparison
#   PyTorch device in    torch_gpu.py --input device images_per_s (no copy in the step)
#   colobench compute    batch / (device_ms_per_step - copy_in_ms_per_step) of bench_nn: the
#    only (derived)      device time of colobench's step less its input copy; derived from two
#                        event-timed spans, not measured on its own
#   ratio                colobench compute only / PyTorch device in
# A second table splits colobench's step: host wall time, staging copy (stage_in_ms), device
# time, of which the input copy, and the derived compute time. PyTorch's figures are event-timed
# with the host running ahead (no synchronization inside its loop); colobench's first column is
# host wall time with a wait at the end of every step (its API is synchronous), so a gap between
# colobench's wall and device times is host-side cost PyTorch's event figure would not show.
#
#   bench/gpu_vs_torch.sh [BUILD_DIR]         (default build)
# Environment: PYTHON (python3), STEPS (50), WARMUP (10), DEVICE (cuda:0), MODELS
# ("resnet18 resnet50"), PRECISIONS ("fp32 tf32 bf16"), CHANNELS_LAST (1: PyTorch in
# channels_last, its faster layout on tensor cores; 0: contiguous), WAIT (spin: bench_nn
# --wait block|spin|yield), RUN_TIMEOUT (180: seconds one run may take before it is stopped
# and counted failed; 0: no limit).
# PyTorch is optional: when $PYTHON cannot import torch and torchvision or torch cannot use
# CUDA, colobench's runs go on alone and a line says "PyTorch comparison skipped: <why>".
# Exit status: 0 when every run worked (PyTorch missing counts as working), 1 when one failed,
# 2 when there is no usable GPU or no bench_nn.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
py=${PYTHON:-python3}
steps=${STEPS:-50}
warmup=${WARMUP:-10}
device=${DEVICE:-cuda:0}
models=${MODELS:-resnet18 resnet50}
precisions=${PRECISIONS:-fp32 tf32 bf16}
wait_policy=${WAIT:-spin}
run_timeout=${RUN_TIMEOUT:-180}
cl=""
[ "${CHANNELS_LAST:-1}" = 1 ] && cl="--channels-last"

die() { echo "gpu_vs_torch: $*" >&2; exit 2; }
[ -x "$build/bench_nn" ] || die "$build/bench_nn not found: build colobench first (cmake --build build)"
command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver here (nvidia-smi not found): this benchmark needs a CUDA GPU"
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || die "nvidia-smi lists no GPU: this benchmark needs a CUDA GPU"

# Is PyTorch with CUDA (and torchvision) there? One line: its versions, or why not.
torch_ok=1
if ! command -v "$py" >/dev/null 2>&1; then
    torch_ok=0
    torch_why="no Python interpreter '$py' (set PYTHON)"
else
    torch_why=$("$py" - 2>&1 <<'PY'
import sys
try:
    import torch
except Exception as e:
    print("PyTorch is not installed for %s (%s)" % (sys.executable, e))
    sys.exit(1)
try:
    import torchvision
except Exception as e:
    print("torchvision is not installed for %s (%s)" % (sys.executable, e))
    sys.exit(1)
if not torch.cuda.is_available():
    print("PyTorch %s cannot use CUDA here (a CPU-only build, or no driver it can use; "
          "torch.version.cuda = %s)" % (torch.__version__, torch.version.cuda))
    sys.exit(1)
print("PyTorch %s (CUDA %s, cuDNN %s), torchvision %s" % (torch.__version__, torch.version.cuda,
      torch.backends.cudnn.version(), torchvision.__version__))
PY
    ) || torch_ok=0
    torch_why=$(printf '%s\n' "$torch_why" | tail -n 1)
fi

# timeout(1) where there is one and a limit is asked for.
limit() {
    if [ "$run_timeout" != 0 ] && command -v timeout >/dev/null 2>&1; then
        timeout "$run_timeout" "$@"
    else
        "$@"
    fi
}

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failed=0
nvidia-smi -L
if [ "$torch_ok" = 1 ]; then
    echo "gpu_vs_torch: $torch_why"
else
    echo "gpu_vs_torch: PyTorch comparison skipped: $torch_why"
    echo "gpu_vs_torch: running colobench's side alone"
fi
for m in $models; do
    for p in $precisions; do
        c="$tmp/colobench-$m-$p.json"
        limit "$build/bench_nn" --device "$device" --precision "$p" --model "$m" --mode train \
            --batch 64 --size 224 --steps "$steps" --warmup "$warmup" --wait "$wait_policy" > "$c" ||
            { echo "gpu_vs_torch: bench_nn $m $p failed (exit $?)" >&2; failed=1; }
        cat "$c"
        [ "$torch_ok" = 1 ] || continue
        for input in host device; do
            t="$tmp/torch-$m-$p-$input.json"
            # shellcheck disable=SC2086 # $cl is empty or one option
            limit "$py" "$here/torch_gpu.py" --device "$device" --precision "$p" --model "$m" \
                --batch 64 --size 224 --steps "$steps" --warmup "$warmup" --input "$input" $cl > "$t" ||
                { echo "gpu_vs_torch: torch_gpu.py $m $p --input $input failed (exit $?)" >&2; failed=1; }
            cat "$t"
        done
    done
done

tpy=$py
command -v "$tpy" >/dev/null 2>&1 || tpy=python3
if ! command -v "$tpy" >/dev/null 2>&1; then
    echo "gpu_vs_torch: no Python to print the table: the JSON lines above are the results"
    exit $failed
fi
# shellcheck disable=SC2086 # the lists split into arguments
"$tpy" - "$tmp" "$torch_ok" "$torch_why" $models -- $precisions <<'PY'
import json, os, sys
tmp, torch_ok, torch_why = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
rest = sys.argv[4:]
cut = rest.index("--")
models, precisions = rest[:cut], rest[cut + 1:]

def load(name):
    try:
        with open(os.path.join(tmp, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None

def num(d, key):
    v = d.get(key) if d else None
    return v if isinstance(v, (int, float)) else None

def cell(v, missing):
    return "%.1f" % v if v else missing

def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"

tmiss = "failed" if torch_ok else "skipped"
fmt = "%-9s %-9s %11s %11s %7s %11s %14s %7s"
print()
print(fmt % ("", "", "colobench", "PyTorch", "", "PyTorch", "colobench", ""))
print(fmt % ("", "", "im/s", "im/s", "", "im/s", "im/s compute", ""))
print(fmt % ("model", "precision", "host in", "host in", "ratio", "device in",
             "only, derived", "ratio"))
split = []
for m in models:
    for p in precisions:
        c = load("colobench-%s-%s.json" % (m, p))
        th = load("torch-%s-%s-host.json" % (m, p)) if torch_ok else None
        td = load("torch-%s-%s-device.json" % (m, p)) if torch_ok else None
        ci, thi, tdi = num(c, "images_per_s"), num(th, "images_per_s"), num(td, "images_per_s")
        dev, cin = num(c, "device_ms_per_step"), num(c, "copy_in_ms_per_step")
        comp = dev - cin if dev is not None and cin is not None and dev - cin > 0 else None
        cc = c["batch"] / (comp / 1e3) if comp and c.get("batch") else None
        print(fmt % (m, p, cell(ci, "failed"), cell(thi, tmiss), ratio(ci, thi),
                     cell(tdi, tmiss), cell(cc, "-"), ratio(cc, tdi)))
        if c:
            split.append((m, p, num(c, "step_ms_median"), num(c, "stage_in_ms"), dev, cin, comp,
                          c.get("gpu_wait", "-")))
print()
print("host in: the batch starts in host memory and every timed step copies it to the GPU")
print("  (colobench: caller's buffer -> pinned staging -> device; PyTorch: pinned tensor ->")
print("  device, non_blocking). ratio = colobench / PyTorch at host input: like with like.")
print("device in: PyTorch's batch lives on the GPU, made once: no copy in the step.")
print("colobench compute only, derived: batch / (device_ms_per_step - copy_in_ms_per_step),")
print("  colobench's event-timed device span less its input copy; compared with PyTorch device in.")
print("colobench im/s are host wall time per step (a wait ends every step); PyTorch's come from")
print("  CUDA events around each step while its host runs ahead.")
if not torch_ok:
    print("PyTorch comparison skipped: %s" % torch_why)
if split:
    f2 = "%-9s %-9s %9s %9s %9s %9s %10s %6s"
    print()
    print("colobench's step, ms (wall: median; device, copy-in: mean of the timed steps):")
    print(f2 % ("model", "precision", "wall", "stage-in", "device", "copy-in", "compute*", "wait"))
    for m, p, wall, stg, dev, cin, comp, w in split:
        print(f2 % (m, p, *("%.2f" % v if v is not None else "-"
                            for v in (wall, stg, dev, cin, comp)), w))
    print("stage-in: host copy into pinned staging (last step; in wall, not in device);")
    print("device: CUDA events from before the input copy to after the results' copy;")
    print("copy-in: the input's and labels' host-to-device copies; *compute = device - copy-in.")
PY
exit $failed
