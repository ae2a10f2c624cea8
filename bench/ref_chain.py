#!/usr/bin/env python3
"""The reference framework's hand-off architecture, measured on this machine.

The RAD lab's Collocation Benchmark runs each stage as a Python thread that blocks on an input
queue.Queue and puts its result on the next stage's queue. This script rebuilds exactly that
shape with no-op stages (tracing off) so bench_overhead can print colobench's hand-off cost as a
ratio against it, measured in the same run. Prints two numbers: the median hand-off (end of a
stage to start of the next, depth-10 chain) and the median query latency through one stage, in ns.
"""
import argparse
import queue
import statistics
import threading
import time

now = time.perf_counter_ns


def stage(inq, outq, transitions):
    while True:
        item = inq.get()
        if item is None:
            outq.put(None)
            return
        start = now()
        transitions.append(start - item[1])
        item[1] = now()
        outq.put(item)


def run(depth, queries):
    qs = [queue.Queue() for _ in range(depth + 1)]
    transitions = []
    threads = [threading.Thread(target=stage, args=(qs[i], qs[i + 1], transitions), daemon=True)
               for i in range(depth)]
    for t in threads:
        t.start()
    lat = []
    for _ in range(queries):
        t0 = now()
        qs[0].put([t0, t0])
        qs[depth].get()
        lat.append(now() - t0)
    qs[0].put(None)
    qs[depth].get()
    # the first stage's "transition" is the loadgen hand-off; keep stage-to-stage ones
    return statistics.median(transitions), statistics.median(lat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=5000)
    a = ap.parse_args()
    handoff, _ = run(10, a.queries)
    _, query = run(1, a.queries)
    print(f"{handoff:.0f} {query:.0f}")


if __name__ == "__main__":
    main()
