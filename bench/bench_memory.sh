#!/usr/bin/env bash
# bench/bench_memory.sh - is a run's memory flat in its length?
#
# Runs an offline depth-1 noop pipeline (queue depth 256) for N queries, for each N in --sizes,
# with trace and monitors off and on, and reports the peak RSS of the whole colobench process
# (GNU time's %M, kilobytes) and the offline throughput (summary.json throughput_qps), then the
# ratio of the largest run's RSS to the smallest's (floor: at most 1.2x, and under 200 MB).
# With --baseline BIN (a colobench built from an earlier commit, e.g. a `git worktree` of it),
# the same runs with BIN in the same invocation, for the before/after RSS and the throughput
# ratio (floor: new offline throughput with full recording not lower than the baseline's).
#
# Usage: bench/bench_memory.sh [--bin build/colobench] [--baseline OLD_BIN]
#                              [--sizes "1000000 5000000 20000000"] [--dir /tmp/cbmem]
# Disk: each run writes its CSV and raw files (about 280 bytes per query): 20 M queries need
# about 6 GB in --dir; each run's directory is removed after it is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/colobench
baseline=""
sizes="1000000 5000000 20000000"
dir=/tmp/cbmem
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "usage: $0 [--bin BIN] [--baseline OLD_BIN] [--sizes \"N ...\"] [--dir DIR]" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "bench_memory: needs GNU time (/usr/bin/time)" >&2; exit 2; }
mkdir -p "$dir"

config() { # N trace_monitors(0|1)
  local n=$1 on=$2
  cat <<EOF
name: mem
monitors: $([ "$on" = 1 ] && echo true || echo false)
trace: $([ "$on" = 1 ] && echo true || echo false)
pipelines:
  - name: p
    inputs: [0]
    outputs: [0]
    loadgen: {component: offline, queue_depth: 256, max_queries: $n, timeout: 3600}
    stages:
      - {id: 0, name: noop, component: util.noop}
EOF
}

# run BIN N ON -> "rss_kb qps"
run() {
  local b=$1 n=$2 on=$3
  local cfg="$dir/mem-$n-$on.yaml" out="$dir/out-$n-$on"
  config "$n" "$on" > "$cfg"
  rm -rf "$out"
  /usr/bin/time -f '%M' -o "$dir/rss" "$b" run "$cfg" -o "$out" --quiet > /dev/null 2> "$dir/err.log" || true
  local rss
  rss=$(tail -n 1 "$dir/rss")
  local qps
  qps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pipelines'][0]['throughput_qps'])" "$out/summary.json" 2>/dev/null || echo nan)
  rm -rf "$out"
  echo "$rss $qps"
}

printf '%-10s %-8s %-22s %14s %14s\n' binary trace+mon queries "peak RSS MB" "queries/s"
declare -A rss_new
for on in 0 1; do
  for n in $sizes; do
    read -r r q < <(run "$bin" "$n" "$on")
    rss_new[$on-$n]=$r
    printf '%-10s %-8s %-22s %14.1f %14.0f\n' new "$on" "$n" "$(echo "$r / 1024" | bc -l)" "$q"
    if [ -n "$baseline" ]; then
      read -r r2 q2 < <(run "$baseline" "$n" "$on")
      printf '%-10s %-8s %-22s %14.1f %14.0f   (new/baseline throughput %.2fx)\n' baseline "$on" "$n" \
        "$(echo "$r2 / 1024" | bc -l)" "$q2" "$(python3 -c "print($q/$q2 if $q2 > 0 else float('nan'))")"
    fi
  done
done
echo
set -- $sizes
first=$1
for last in $sizes; do :; done
for on in 0 1; do
  a=${rss_new[$on-$first]} b=${rss_new[$on-$last]}
  printf 'trace+monitors %s: peak RSS %s queries / %s queries = %.2fx (floor: <= 1.2x), largest %.1f MB (floor: < 200 MB)\n' \
    "$on" "$last" "$first" "$(python3 -c "print($b/$a)")" "$(echo "$b / 1024" | bc -l)"
done
