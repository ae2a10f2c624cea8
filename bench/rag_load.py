#!/usr/bin/env python3
"""Where a RAG query's time goes as the load rises: runs a RAG benchmark at increasing Poisson
rates (each point a separate `colobench run` with the rate set by --set) and prints, per rate,
the achieved throughput, the latency percentiles, and per stage the median service time, queueing
and transit (transition_ns_p50: from the end of the upstream run to the start of this one,
queueing included), so the stage that saturates first shows.

Usage:
  bench/rag_load.py [--colobench build/colobench] [--config examples/rag_basic.yaml]
                    [--pipeline rag] [--rates 0.5,1,2,4,8] [--queries 60] [--out out/rag_load]
                    [--markdown] [--set KEY=VALUE ...]

Each point runs --queries queries (loadgen.max_queries) after the config's warm-up. Output: a
table per rate (text, or Markdown with --markdown for docs/benchmarks.md) and DIR/points.json.
"""
import argparse
import json
import os
import subprocess
import sys


def ms(ns):
    return "%.1f" % (ns / 1e6) if ns is not None else "-"


def run_point(args, rate):
    out = os.path.join(args.out, "rate_%g" % rate)
    cmd = [args.colobench, "run", args.config, "-o", out, "--quiet",
           "--set", "pipelines.%s.loadgen.component=poisson" % args.pipeline,
           "--set", "pipelines.%s.loadgen.config.rate=%g" % (args.pipeline, rate),
           "--set", "pipelines.%s.loadgen.max_queries=%d" % (args.pipeline, args.queries)]
    for s in args.set or []:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("rate %g: %s failed (%d):\n%s\n" % (rate, " ".join(cmd), r.returncode,
                                                           r.stderr[-2000:]))
        return None
    with open(os.path.join(out, "summary.json")) as f:
        d = json.load(f)
    p = next(x for x in d["pipelines"] if x["name"] == args.pipeline)
    return {"rate": rate, "throughput_qps": p["throughput_qps"], "latency_ns": p["latency_ns"],
            "stages": [{"name": s["name"], "service_p50_ns": s["service_ns"]["p50"],
                        "queue_p50_ns": s["queue_ns"]["p50"],
                        "transit_p50_ns": s.get("transition_ns_p50")} for s in p["stages"]]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--colobench", default="build/colobench")
    ap.add_argument("--config", default="examples/rag_basic.yaml")
    ap.add_argument("--pipeline", default="rag")
    ap.add_argument("--rates", default="0.5,1,2,4,8")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--out", default="out/rag_load")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--set", action="append")
    args = ap.parse_args()
    points = []
    for rate in [float(x) for x in args.rates.split(",")]:
        pt = run_point(args, rate)
        if pt:
            points.append(pt)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "points.json"), "w") as f:
        json.dump(points, f, indent=1)
    for pt in points:
        lat = pt["latency_ns"]
        head = "rate %g/s: %.2f queries/s, latency p50 %s ms, p99 %s ms" % (
            pt["rate"], pt["throughput_qps"], ms(lat.get("p50")), ms(lat.get("p99")))
        if args.markdown:
            print("\n**%s**\n\n| stage | service p50 (ms) | queue p50 (ms) | transit p50 (ms) |" % head)
            print("|---|---|---|---|")
            for s in pt["stages"]:
                print("| %s | %s | %s | %s |" % (s["name"], ms(s["service_p50_ns"]),
                                                 ms(s["queue_p50_ns"]), ms(s["transit_p50_ns"])))
        else:
            print(head)
            for s in pt["stages"]:
                print("  %-12s service %8s ms  queue %8s ms  transit %8s ms" % (
                    s["name"], ms(s["service_p50_ns"]), ms(s["queue_p50_ns"]),
                    ms(s["transit_p50_ns"])))
    return 0 if points else 1


if __name__ == "__main__":
    sys.exit(main())
