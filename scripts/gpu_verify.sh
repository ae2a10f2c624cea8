#!/usr/bin/env bash
# scripts/gpu_verify.sh - what a machine with a CUDA GPU runs to verify colobench's GPU side, in
# steps that each fit a 10-minute slot (a lent GPU machine's per-command limit):
#   scripts/gpu_verify.sh build        configure and build (Release) into build-gpu
#   scripts/gpu_verify.sh tests        colobench devices (the CUDA stack's versions, the devices),
#                                      then ctest -L gpu (every GPU-labelled test)
#   scripts/gpu_verify.sh bench        bench/gpu_vs_torch.sh (colobench vs PyTorch, ResNet-18/50,
#                                      PyTorch with host input and with device input)
#   scripts/gpu_verify.sh colocation   bench/gpu_collocation.sh (1, 2, 4 trainers, processes, MPS)
#   scripts/gpu_verify.sh quick        build, then tests (a short device slot)
#   scripts/gpu_verify.sh all          build, tests, bench, colocation (the default)
# Several steps may be named: scripts/gpu_verify.sh tests bench.
#
# Every named step runs even after one fails, except that a failed build stops the steps after
# it (they need it). Each step's output goes to the terminal and to $OUT/<step>.log; the build
# step's log is the whole configure and build output (the terminal gets its last 3 lines, or
# its last 60 and the log's path when it fails). At the end a summary table (step, status,
# seconds, log), also written to $OUT/summary.txt.
#
# What makes a step fail:
#   build       configure or build failed; or nvidia-smi lists a GPU but the CUDA module
#               (BUILD_DIR/lib/colobench_cuda.so) was not built (no toolkit or cuDNN found)
#   tests       colobench devices finds no usable device while nvidia-smi lists a GPU; a GPU
#               test failed; or nvidia-smi lists a GPU and ctest ran no GPU test or skipped
#               every one (a GPU machine must run them). Without a GPU the step runs both (the
#               reasons are printed) and ends with status 2: nothing was verified.
#   bench       a run of bench/gpu_vs_torch.sh failed, or there is no GPU (2). PyTorch with CUDA
#               missing is not a failure: colobench's side runs alone and the log says
#               "PyTorch comparison skipped: <why>".
#   colocation  bench/gpu_collocation.sh's status (1: a point failed; 2: no GPU, bad config).
#
# Environment:
#   OUT          where the logs go (out/gpu-verify)
#   BUILD_DIR    the build directory (build-gpu)
#   JOBS         build parallelism (nproc)
#   bench, passed through to bench/gpu_vs_torch.sh:
#   STEPS (50 timed training steps per run), WARMUP (10), MODELS ("resnet18 resnet50"),
#   PRECISIONS ("fp32 tf32 bf16"), DEVICE (cuda:0), PYTHON (python3, the one with PyTorch),
#   CHANNELS_LAST (1), WAIT (spin), RUN_TIMEOUT (180 s per run)
#   colocation, passed through to bench/gpu_collocation.sh: COLOBENCH_ARGS (e.g.
#   "--set sweep.replicas=[1,2]" for a shorter sweep)
#
# Time on the lent 16-core H100 machine, estimated (nothing here has run on a GPU yet): build
# 2-5 minutes (the C sources and the CUDA module for sm_80 and sm_90); tests 1-3 minutes; bench
# 4-7 minutes (6 configurations x 3 runs, colobench and PyTorch with host and device input:
# each run is a process start, cuDNN's algorithm search in the warm-up and 60 steps of 5-100
# ms; MODELS=resnet18 halves it); colocation 3-5 minutes (6 sweep points with baselines).
# Each step's default is meant to stay under 8 minutes; quick (build + tests) fits one
# 10-minute slot, all does not: give each step its own command there.
#
# Exit status: the first failing step's status in the order run (0 when every step passed);
# a step's status is 1 when it failed and 2 when it could not run (no GPU, nothing built);
# 2 also for a bad step name.

# shellcheck disable=SC2317 # the step functions are called indirectly ("step_$s")
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-out/gpu-verify}
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

usage() {
    echo "usage: scripts/gpu_verify.sh [build|tests|bench|colocation|quick|all]..." >&2
    exit 2
}

# The steps to run, in order, each once.
want=()
add() {
    local s
    for s in "${want[@]+"${want[@]}"}"; do [ "$s" = "$1" ] && return; done
    want+=("$1")
}
[ $# -eq 0 ] && set -- all
for a in "$@"; do
    case "$a" in
        build|tests|bench|colocation) add "$a" ;;
        quick) add build; add tests ;;
        all) add build; add tests; add bench; add colocation ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_verify: unknown step '$a'" >&2; usage ;;
    esac
done
mkdir -p "$out" || exit 2

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }
gpu_line() {
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "no NVIDIA driver here (nvidia-smi not found)"
    elif ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
        echo "nvidia-smi lists no GPU"
    else
        nvidia-smi -L 2>/dev/null | grep '^GPU ' | head -n 4
    fi
}
# A step that needs the build: 2 with a message when it is missing.
need_build() {
    [ -x "$build/$1" ] && return 0
    echo "gpu_verify: $build/$1 not found: run scripts/gpu_verify.sh build first"
    return 2
}

step_build() {
    local log="$out/build.log" rc
    echo "configure and build: $build (Release, -j$jobs); full log: $log"
    {
        cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release &&
            cmake --build "$build" -j"$jobs"
    } > "$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "gpu_verify: the build failed (exit $rc); the last 60 lines of $log:"
        tail -n 60 "$log"
        echo "gpu_verify: build failed; whole log: $log"
        return 1
    fi
    tail -n 3 "$log"
    if [ -f "$build/lib/colobench_cuda.so" ]; then
        echo "CUDA module: $build/lib/colobench_cuda.so"
    elif has_gpu; then
        echo "gpu_verify: this machine has a GPU but the CUDA module was not built" \
             "($build/lib/colobench_cuda.so missing); what configure said about CUDA:"
        grep -i -E 'cuda|cudnn' "$log" | head -n 20
        echo "gpu_verify: install the CUDA toolkit with cuDNN (nvcc, cudnn.h, libcudnn) and rebuild"
        return 1
    else
        echo "CUDA module: not built (no CUDA toolkit with cuDNN here; no GPU here either)"
    fi
    return 0
}

step_tests() {
    need_build colobench || return
    local gpu=0 drc crc total skipped ctlog="$out/tests.ctest.txt"
    has_gpu && gpu=1
    echo "-- GPU: $(gpu_line)"
    echo "-- $build/colobench devices"
    "$build/colobench" devices
    drc=$?
    echo "-- ctest -L gpu --output-on-failure"
    (cd "$build" && ctest -L gpu --output-on-failure) 2>&1 | tee "$ctlog"
    crc=${PIPESTATUS[0]}
    total=$(sed -n 's/.*tests failed out of \([0-9][0-9]*\).*/\1/p' "$ctlog" | tail -n 1)
    total=${total:-0}
    skipped=$(grep -c -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*Skipped' "$ctlog")
    echo "-- GPU tests: $total found by ctest, $skipped of them skipped, ctest exit $crc"
    if [ "$skipped" -gt 0 ]; then # why: the first skipped test's own words
        local t
        t=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*Skipped' "$ctlog" | head -n 1 |
            sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/')
        [ -x "$build/$t" ] && "$build/$t" 2>&1 | grep -m 1 '^# SKIP' | sed "s/^/-- $t: /"
    fi
    if [ "$crc" -ne 0 ]; then
        echo "gpu_verify: tests: a GPU test failed (ctest exit $crc)"
        return 1
    fi
    if [ "$gpu" = 1 ]; then
        if [ "$drc" -ne 0 ]; then
            echo "gpu_verify: tests: nvidia-smi lists a GPU but colobench devices finds none usable" \
                 "(exit $drc; its reason above)"
            return 1
        fi
        if [ "$total" -eq 0 ]; then
            echo "gpu_verify: tests: this machine has a GPU but ctest found no GPU test"
            return 1
        fi
        if [ "$skipped" -ge "$total" ]; then
            echo "gpu_verify: tests: this machine has a GPU but every GPU test was skipped:" \
                 "nothing was verified"
            return 1
        fi
        [ "$skipped" -gt 0 ] && echo "gpu_verify: tests: warning: $skipped of $total GPU tests skipped"
        return 0
    fi
    echo "gpu_verify: tests: no GPU here ($(gpu_line)): the GPU tests could only be skipped;" \
         "nothing was verified"
    return 2
}

step_bench() {
    need_build bench_nn || return
    bash bench/gpu_vs_torch.sh "$build"
}

step_colocation() {
    need_build colobench || return
    # A fresh directory per run: an old sweep.csv is never shown as this run's.
    bash bench/gpu_collocation.sh "$out/collocation-$(date -u +%Y%m%d-%H%M%S)" "$build"
}

names=() statuses=() times=() logs=() first_rc=0 build_failed=0
run_step() {
    local s=$1 log="$out/$1.log" t0=$SECONDS rc status
    echo
    echo "== $s ($(date -u '+%Y-%m-%d %H:%M:%S UTC'))"
    if [ "$build_failed" = 1 ]; then
        echo "not run: the build failed"
        names+=("$s") statuses+=("not run (build failed)") times+=("-") logs+=("-")
        return
    fi
    if [ "$s" = build ]; then
        step_build # writes the whole log itself
        rc=$?
    else
        "step_$s" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    fi
    case $rc in
        0) status=ok
           [ "$s" = bench ] && grep -q 'PyTorch comparison skipped' "$log" &&
               status="ok (colobench only: PyTorch skipped)" ;;
        2) if has_gpu; then status="could not run (exit 2)"
           else status="not verified: no GPU (exit 2)"; fi ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    [ "$s" = build ] && [ "$rc" -ne 0 ] && build_failed=1
    [ "$rc" -ne 0 ] && [ "$first_rc" = 0 ] && first_rc=$rc
    names+=("$s") statuses+=("$status") times+=("$((SECONDS - t0))") logs+=("$log")
}

echo "gpu_verify: steps: ${want[*]}; logs in $out; build in $build"
echo "gpu_verify: commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); GPU: $(gpu_line | head -n 1)"
for s in "${want[@]}"; do run_step "$s"; done

{
    echo
    echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'))"
    fmt="%-11s %-42s %8s  %s\n"
    # shellcheck disable=SC2059 # the format is ours
    printf "$fmt" step status seconds log
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2059
        printf "$fmt" "${names[$i]}" "${statuses[$i]}" "${times[$i]}" "${logs[$i]}"
    done
    echo "exit status: $first_rc"
} | tee "$out/summary.txt"
exit "$first_rc"
