#!/usr/bin/env python3
"""Checks a colobench trace.json against the events.csv and metrics.csv it was made from.

Usage: check_trace.py TRACE_JSON EVENTS_CSV [METRICS_CSV] [--sampled]

Checks (python3 stdlib only; prints every mismatch, exits 1 on any):
- the file is the JSON object format: traceEvents, displayTimeUnit "ns", metadata;
- every "X" slice matches exactly one events.csv row (pipeline via process_name, or the thread
  name's "PIPELINE: " prefix when pipelines share a pid; stage name; query id; start and end
  relative to t0 equal to ns / 1000 within 0.001 us; batch, epoch, queue_us; device_us exactly
  when the row has a device_ns), each row used once;
- without --sampled: every row has a slice, metadata.sampled is false; with --sampled:
  metadata.sampled is true, slices_written == slices in the file <= max_slices, slices_total ==
  rows, every kept query has all its slices and id % stride == 0, and stride - 1 would not fit;
- every tid used by a slice or flow has a thread_name "STAGE #W" (W = the row's worker);
- every query with >= 2 slices has one flow id with exactly one "s", one "f" (bp "e") and
  n - 2 "t" events, each inside a slice of that query on the same pid/tid; single-slice
  queries have no flow;
- counter ("C") events equal the metrics.csv rows (name source/device/pid/metric without
  empty parts, ts = t_ns / 1000, args.value), on the process named "monitors".
"""
import collections
import csv
import json
import sys

TOL_US = 0.001 + 1e-9


def main(argv):
    sampled = "--sampled" in argv
    args = [a for a in argv[1:] if a != "--sampled"]
    if len(args) not in (2, 3):
        print(__doc__)
        return 2
    trace_path, events_path = args[0], args[1]
    metrics_path = args[2] if len(args) == 3 else None
    errors = []

    def fail(msg):
        errors.append(msg)

    with open(trace_path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except ValueError as e:
            print("trace.json is not valid JSON: %s" % e)
            return 1
    for key in ("traceEvents", "displayTimeUnit", "metadata"):
        if key not in doc:
            fail("missing top-level key %r" % key)
    if errors:
        return report(errors)
    if doc["displayTimeUnit"] != "ns":
        fail("displayTimeUnit is %r" % doc["displayTimeUnit"])
    meta = doc["metadata"]
    events = doc["traceEvents"]

    # Rows of events.csv.
    rows = []
    with open(events_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append(r)
    pipeline_names = {r["pipeline"] for r in rows}

    proc_names, thread_names = {}, {}
    for e in events:
        if e.get("ph") != "M":
            continue
        if e["name"] == "process_name":
            proc_names[e["pid"]] = e["args"]["name"]
        elif e["name"] == "thread_name":
            thread_names[(e["pid"], e["tid"])] = e["args"]["name"]

    def pipeline_of(e):
        pname = proc_names.get(e["pid"])
        if pname is None or not pname.startswith("pipeline "):
            return None
        cand = pname[len("pipeline "):]
        if cand in pipeline_names or " + " not in cand:
            return cand
        tname = thread_names.get((e["pid"], e["tid"]), "")
        for n in pipeline_names:
            if tname.startswith(n + ": "):
                return n
        return None

    # Index rows by (pipeline, stage, query id).
    by_key = collections.defaultdict(list)
    for r in rows:
        by_key[(r["pipeline"], r["stage"], int(r["query_id"]))].append(r)
    used = set()
    slices = [e for e in events if e.get("ph") == "X"]
    slices_by_query = collections.defaultdict(list)
    for e in slices:
        p = pipeline_of(e)
        if p is None:
            fail("slice on pid %s without a pipeline process_name: %s" % (e["pid"], e))
            continue
        a = e.get("args", {})
        q = a.get("query")
        if e.get("cat") != "stage":
            fail("slice cat is %r" % e.get("cat"))
        key = (p, e["name"], q)
        match = None
        for r in by_key.get(key, []):
            if id(r) in used:
                continue
            s_us, e_us = int(r["start_ns"]) / 1000.0, int(r["end_ns"]) / 1000.0
            if abs(e["ts"] - s_us) <= TOL_US and abs(e["ts"] + e["dur"] - e_us) <= TOL_US:
                match = r
                break
        if match is None:
            fail("slice matches no events.csv row: %s" % json.dumps(e))
            continue
        used.add(id(match))
        q_us = (int(match["start_ns"]) - int(match["enqueue_ns"])) / 1000.0
        if abs(a.get("queue_us", -1e300) - q_us) > TOL_US:
            fail("queue_us %s != %s for %s" % (a.get("queue_us"), q_us, key))
        if a.get("batch") != int(match["batch"]) or a.get("epoch") != int(match["epoch"]):
            fail("batch/epoch differ for %s" % (key,))
        dev = match.get("device_ns") or ""  # empty (or no column): no device time reported
        if dev == "":
            if "device_us" in a:
                fail("device_us on a run without device time: %s" % (key,))
        elif not isinstance(a.get("device_us"), (int, float)):
            fail("device_us is %s for %s, whose row has device_ns %s"
                 % ("missing" if "device_us" not in a else "null" if a["device_us"] is None
                    else repr(a["device_us"]), key, dev))
        elif abs(a["device_us"] - int(dev) / 1000.0) > TOL_US:
            fail("device_us %s != %s for %s" % (a["device_us"], int(dev) / 1000.0, key))
        if not isinstance(a.get("warmup"), bool) or "split" not in a:
            fail("args.warmup (bool) / args.split missing for %s" % (key,))
        tname = thread_names.get((e["pid"], e["tid"]))
        want = "%s #%s" % (e["name"], match["worker"])
        if tname is None:
            fail("no thread_name for pid %s tid %s" % (e["pid"], e["tid"]))
        elif not (tname == want or tname.endswith(": " + want)):
            fail("thread name %r, expected %r" % (tname, want))
        slices_by_query[(p, q)].append(e)

    # Coverage and sampling.
    n_rows = len(rows)
    rows_by_query = collections.Counter((r["pipeline"], int(r["query_id"])) for r in rows)
    if meta.get("slices_total") != n_rows:
        fail("metadata.slices_total %s != %d rows" % (meta.get("slices_total"), n_rows))
    if meta.get("slices_written") != len(slices):
        fail("metadata.slices_written %s != %d slices" % (meta.get("slices_written"), len(slices)))
    if "benchmark" not in meta:
        fail("metadata.benchmark missing")
    if not sampled:
        if meta.get("sampled") is not False:
            fail("metadata.sampled is %r, expected false" % meta.get("sampled"))
        if len(used) != n_rows:
            fail("%d events.csv rows have no slice (%d slices, %d rows)"
                 % (n_rows - len(used), len(slices), n_rows))
    else:
        k = meta.get("query_sampling_stride")
        cap = meta.get("max_slices")
        if meta.get("sampled") is not True:
            fail("metadata.sampled is %r, expected true" % meta.get("sampled"))
        if not isinstance(k, int) or k < 2 or not isinstance(cap, int):
            fail("bad stride %r / max_slices %r" % (k, cap))
        else:
            if len(slices) > cap:
                fail("%d slices written, over max_slices %d" % (len(slices), cap))
            for (p, q), n in rows_by_query.items():
                kept = len(slices_by_query.get((p, q), []))
                want = n if q % k == 0 else 0
                if kept != want:
                    fail("query %s/%d: %d slices in the trace, expected %d" % (p, q, kept, want))
            prev = sum(n for (p, q), n in rows_by_query.items() if q % (k - 1) == 0)
            if k > 2 and prev <= cap:
                fail("stride %d is not the smallest: %d would keep %d <= %d" % (k, k - 1, prev, cap))

    # Flows.
    flows = collections.defaultdict(list)
    for e in events:
        if e.get("ph") in ("s", "t", "f"):
            if e.get("cat") != "query" or e.get("name") != "query":
                fail("flow event with cat/name %r/%r" % (e.get("cat"), e.get("name")))
            flows[e["id"]].append(e)
    on_thread = collections.defaultdict(list)
    for key, ss in slices_by_query.items():
        for sl in ss:
            on_thread[(sl["pid"], sl["tid"])].append((key, sl))
    flow_of_query = collections.defaultdict(list)
    for fid, fe in flows.items():
        phs = collections.Counter(e["ph"] for e in fe)
        if phs["s"] != 1 or phs["f"] != 1 or phs["t"] != len(fe) - 2:
            fail("flow %s has %d s, %d t, %d f events" % (fid, phs["s"], phs["t"], phs["f"]))
        # The query whose slices enclose every event of the flow (same pid/tid, ts inside).
        common = None
        for e in fe:
            if e["ph"] == "f" and e.get("bp") != "e":
                fail("flow %s: f event without bp e" % fid)
            if (e["pid"], e["tid"]) not in thread_names:
                fail("flow %s on pid %s tid %s without thread_name" % (fid, e["pid"], e["tid"]))
            qs = {key for key, sl in on_thread.get((e["pid"], e["tid"]), [])
                  if sl["ts"] - TOL_US <= e["ts"] <= sl["ts"] + sl["dur"] + TOL_US}
            common = qs if common is None else common & qs
        if not common:
            fail("flow %s: its events are not all inside slices of one query" % fid)
            continue
        for key in common:
            if len(slices_by_query[key]) == len(fe):
                flow_of_query[key].append(fid)
    for key, ss in slices_by_query.items():
        n = len(flow_of_query.get(key, []))
        if len(ss) >= 2 and n != 1:
            fail("query %s with %d slices has %d flows" % (key, len(ss), n))
        if len(ss) < 2 and n:
            fail("single-slice query %s has a flow" % (key,))
    n_multi = sum(1 for ss in slices_by_query.values() if len(ss) >= 2)
    if len(flows) != n_multi:
        fail("%d flows for %d queries with >= 2 slices" % (len(flows), n_multi))

    # Counters.
    counters = [e for e in events if e.get("ph") == "C"]
    if metrics_path:
        want = []
        with open(metrics_path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if not r["t_ns"]:
                    continue
                name = "/".join(x for x in (r["source"], r["device"], r["pid"], r["metric"]) if x)
                want.append((name, int(r["t_ns"]) / 1000.0, float(r["value"])))
        if len(counters) != len(want):
            fail("%d counter events for %d metrics.csv rows" % (len(counters), len(want)))
        got = sorted((e["name"], e["ts"], e["args"]["value"]) for e in counters)
        for g, w in zip(got, sorted(want)):
            if g[0] != w[0] or abs(g[1] - w[1]) > TOL_US or g[2] != w[2]:
                fail("counter %s != metrics row %s" % (g, w))
        for e in counters:
            if proc_names.get(e["pid"]) != "monitors":
                fail("counter on pid %s not named monitors" % e["pid"])
    elif counters:
        fail("%d counter events without a metrics.csv" % len(counters))

    return report(errors)


def report(errors):
    if not errors:
        print("check_trace: ok")
        return 0
    for e in errors[:50]:
        print("check_trace: " + e)
    if len(errors) > 50:
        print("check_trace: ... and %d more" % (len(errors) - 50))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
