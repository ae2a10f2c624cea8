#!/usr/bin/env bash
# The test command: builds and runs the whole suite.
#   1. release build (gcc): every unit and integration test (ctest: label cpu, and label gpu,
#      which skips without a CUDA device); the CUDA module is built when the toolkit is present
#   2. clang build with -Werror (compile check)
#   3. Release build (gcc -O3, -Werror; compile check, the CUDA module too when the toolkit is
#      present): warnings that only optimisation finds (maybe-uninitialized) break no build type
#   4. ASan+UBSan build: the whole suite
#   5. TSan build: the runtime, recorder, record files, stage metrics, data stages, monitor, the
#      HTTP client (llm.openai against colobench serve), collocation, integrity and CLI tests
#   6. libFuzzer targets, each run for a bounded time: the config loader (CB_FUZZ_SECONDS, 30)
#      and the safetensors reader and model load (CB_FUZZ_ST_SECONDS, 15)
# Tests assert what the code computes, or physical outcomes with margins that hold when another
# process saturates the cores and under sanitizers; the few that measure CPU sharing run alone
# (ctest RUN_SERIAL). About 16-17 minutes on 2 cores (each step prints when it started).
# Usage: scripts/test.sh [--quick]   (--quick: step 1 only)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
step() { printf '\n== %s  [+%d s]\n' "$*" "$SECONDS"; }
passed=0
skipped=0
# Runs ctest in a build dir with extra args, adding its test count to `passed` and the tests it
# skipped (GPU tests without a device, exit 77) to `skipped` (set -e stops on a failure, after
# ctest has printed which test failed).
run_ctest() {
  local dir=$1; shift
  local log total skip
  log=$(mktemp)
  (cd "$dir" && "$@" ctest --output-on-failure ${CTEST_ARGS:-}) | tee "$log"
  total=$(cd "$dir" && ctest -N ${CTEST_ARGS:-} | sed -n 's/^Total Tests: //p')
  skip=$(grep -c '\*\*\*Skipped' "$log" || true)
  rm -f "$log"
  passed=$((passed + total - skip))
  skipped=$((skipped + skip))
}

step "banned functions (atoi, sprintf, strcpy, strcat, strtok, gets)"
if grep -rnE '\b(atoi|atol|atoll|sprintf|vsprintf|strcpy|strcat|strtok|gets)\s*\(' src include examples bench \
     | grep -vE '\b(snprintf|vsnprintf)\s*\('; then
  echo "banned function used: use bounded cursor parsers and snprintf (STYLE.md)"; exit 1
fi
passed=$((passed + 1))

step "build (gcc, RelWithDebInfo) and test"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
CTEST_ARGS="-j$jobs" run_ctest build env
if [ $quick = 1 ]; then echo "suite: $passed passed, 0 failed, $skipped skipped"; exit 0; fi

step "build with clang -Werror"
# The clang and Release builds compile the CUDA kernels (.cu, nvcc) for one architecture only:
# the plain build already compiles them for every architecture; these builds are here for their
# C warnings. The ASan build leaves the CUDA module out (its tests then check the build-without-
# CUDA paths; the module itself is loaded by the plain build's tests).
cmake -S . -B build-clang -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-clang -j"$jobs"

step "build in Release (gcc -O3) with -Werror"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-release -j"$jobs"

step "ASan+UBSan: whole suite"
cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DCB_SANITIZE=address -DCB_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs" --target cb_tests
CTEST_ARGS="-j$jobs" run_ctest build-asan env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

step "TSan: runtime, recorder, stage metrics, data stages, monitor, collocation, integrity, CLI and HTTP client tests"
cmake -S . -B build-tsan -DCMAKE_C_COMPILER=clang -DCB_SANITIZE=thread -DCB_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
tsan_tests=(runtime held cli stages monitor colloc metrics data integrity records llm_openai)
# Only these tests (and what they run: colobench, plugins, fakes) are built with TSan.
cmake --build build-tsan -j"$jobs" --target "${tsan_tests[@]/#/test_}"
CTEST_ARGS="-j$jobs -R test_($(IFS='|'; echo "${tsan_tests[*]}"))\$" run_ctest build-tsan env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

step "fuzz the config loader for ${CB_FUZZ_SECONDS:-30} s"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCB_FUZZ=ON -DCB_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_config fuzz_safetensors
mkdir -p build-fuzz/corpus build-fuzz/corpus_safetensors
./build-fuzz/fuzz_config -max_total_time="${CB_FUZZ_SECONDS:-30}" -max_len=1048576 -timeout=10 \
  -rss_limit_mb=4096 build-fuzz/corpus tests/fuzz/corpus tests/fuzz/corpus_large 2>&1 | tail -n 3
echo "fuzz: no crash"
passed=$((passed + 1))

step "fuzz the safetensors reader and model load for ${CB_FUZZ_ST_SECONDS:-15} s"
./build-fuzz/fuzz_safetensors -max_total_time="${CB_FUZZ_ST_SECONDS:-15}" -max_len=1048576 -timeout=10 -rss_limit_mb=4096 \
  -dict=tests/fuzz/safetensors.dict build-fuzz/corpus_safetensors tests/fuzz/corpus_safetensors \
  2>&1 | tail -n 3
echo "fuzz: no crash"
passed=$((passed + 1))
echo
echo "suite: $passed passed, 0 failed, $skipped skipped (GPU tests without a CUDA device) in $SECONDS s"
