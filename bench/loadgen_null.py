"""MLPerf LoadGen's null SUT (Server scenario, Poisson arrivals) at given rates, for
bench_arrivals' comparison table (docs/benchmarks.md). The SUT completes every query inside
IssueQuery, as LoadGen's own tests/perftests_null_sut.cc does, through the Python bindings.
Needs `pip install mlcommons-loadgen` (a throwaway venv; not a colobench dependency).
Usage: python loadgen_null.py [--seconds S] RATE...  Prints one line per rate:
rate, p50 and p99 latency (us) from LoadGen's summary, process CPU seconds per second.
"""
import argparse
import os
import re
import resource
import tempfile
import time

import mlperf_loadgen as lg


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(rate, seconds):
    def issue(samples):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    def flush():
        pass

    sut = lg.ConstructSUT(issue, flush)
    qsl = lg.ConstructQSL(1024, 1024, lambda s: None, lambda s: None)
    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = rate
    settings.server_target_latency_ns = 100_000_000
    settings.min_duration_ms = int(seconds * 1000)
    settings.min_query_count = int(rate * seconds)
    settings.max_duration_ms = int(seconds * 4000) + 1000
    with tempfile.TemporaryDirectory() as d:
        out = lg.LogOutputSettings()
        out.outdir = d
        out.copy_summary_to_stdout = False
        log = lg.LogSettings()
        log.log_output = out
        c0, t0 = cpu_s(), time.monotonic()
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
        c1, t1 = cpu_s(), time.monotonic()
        text = open(os.path.join(d, "mlperf_log_summary.txt")).read()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)

    def pct(p):
        m = re.search(r"^%s percentile latency \(ns\)\s*:\s*(\d+)" % p, text, re.M)
        return int(m.group(1)) / 1e3 if m else float("nan")

    return pct("50.00"), pct("99.00"), (c1 - c0) / (t1 - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("rates", type=float, nargs="+")
    a = ap.parse_args()
    print("%-8s %9s %9s %9s %8s" % ("build", "rate/s", "lat p50", "lat p99", "proc cpu"))
    for r in a.rates:
        p50, p99, cpu = run(r, a.seconds)
        print("%-8s %9.0f %9.1f %9.1f %8.3f" % ("loadgen", r, p50, p99, cpu), flush=True)


if __name__ == "__main__":
    main()
