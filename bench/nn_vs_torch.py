#!/usr/bin/python3
"""bench/nn_vs_torch.py - colobench's CPU neural-network layer against PyTorch, same machine,
same run: Debian's PyTorch 1.13 and, when `scripts/setup.sh --bench` made .venv-bench/, the
current PyTorch 2.x from PyPI.

For every configuration of issue 5 (ResNet-18/50 training at 224x224 batch 16 and 32, inference
batch 1 and 32, ResNet-18 training at 32x32 batch 128; each at 1 and 2 threads) it runs
build/bench_nn and bench/torch_resnet.py under each PyTorch, each configuration in a fresh
process, alternating the sides (1.13, 2.x, colobench, 1.13, ...) `--rounds` times so drift in
the machine hits all of them, and prints the best round of each side, colobench's ratio to 1.13
and to the faster of the two PyTorch builds (named in the `faster` column).

PyTorch is measured at its best, not as installed: torch.set_num_threads(N), channels_last
model and input (for inference the faster of channels_last and contiguous), inference under
torch.inference_mode, and glibc told to keep freed memory (MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ set high: stock malloc returns and re-faults the large activation
buffers every step). PyTorch 2.x is also run under torch.compile (Inductor; freezing for
inference) and the faster of eager and compiled is kept, named in the `2.x how` column.
Compilation is excluded (warm-up); `--prime` only compiles every selected configuration,
so that a later timed run finds it in Inductor's on-disk cache. colobench gets the same environment.

Usage: /usr/bin/python3 bench/nn_vs_torch.py [--build build] [--rounds 2] [--quick]
       [--only resnet18] [--threads 1,2] [--rows 1-4,9] [--torch2 PYTHON | --no-torch2]
       [--no-compile] [--prime] [--markdown] [--json FILE]
       /usr/bin/python3 bench/nn_vs_torch.py --merge A.json B.json [--markdown] (a run split over
       commands: each side's best per row)
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = [
    # model, mode, batch, size
    ("resnet18", "train", 16, 224),
    ("resnet18", "train", 32, 224),
    ("resnet50", "train", 16, 224),
    ("resnet50", "train", 32, 224),
    ("resnet18", "infer", 1, 224),
    ("resnet18", "infer", 32, 224),
    ("resnet50", "infer", 1, 224),
    ("resnet50", "infer", 32, 224),
    ("resnet18", "train", 128, 32),
]


def steps_for(model, mode, batch, size, threads, quick):
    """Enough steps for a stable median without making the run take hours on 2 cores."""
    work = batch * (size / 224.0) ** 2 * (3 if mode == "train" else 1) * (2.3 if model == "resnet50" else 1)
    work /= threads
    if work >= 48:
        s = 4
    elif work >= 8:
        s = 8
    else:
        s = 30
    return max(2, s // 2) if quick else s


def run_json(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()[-2000:]))
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def parse_rows(text, n):
    """'1-4,9' -> {0, 1, 2, 3, 8}: 1-based row numbers of the table, as printed."""
    rows = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            sys.exit("nn_vs_torch: --rows: '%s' is not a row number or range (e.g. 1-4,9)" % part)
        if not 1 <= first <= last <= n:
            sys.exit("nn_vs_torch: --rows: '%s' is outside rows 1-%d" % (part, n))
        rows.update(range(first - 1, last))
    return rows


def best(results):
    return max(results, key=lambda r: r["images_per_s"])


def how(r):
    """How a PyTorch figure was obtained: compiled or eager, and the layout."""
    return ("compile" if r.get("compile") else "eager") + (
        "" if r["layout"] == "channels_last" else " contiguous")


def combine(meta, parts):
    """One row from the runs of one or more invocations (each a dict of lists of JSON results):
    each side's best run, colobench's ratios to 1.13 and to the faster PyTorch."""
    def pick(key, keep=lambda r: True):
        runs = [r for p in parts for r in (p.get(key) or []) if keep(r)]
        return best(runs) if runs else None
    r = dict(meta)
    r["torch"] = pick("torch")
    r["torch2_runs"] = [x for p in parts for x in (p.get("torch2_runs") or [])]
    r["torch2_eager"] = pick("torch2_runs", lambda x: not x.get("compile"))
    r["torch2_compile"] = pick("torch2_runs", lambda x: x.get("compile"))
    r["torch2"] = pick("torch2_runs")
    r["colobench"] = pick("colobench")
    r["colobench_winograd"] = pick("colobench_winograd")
    r["faster"] = "2.x" if r["torch2"] and r["torch2"]["images_per_s"] > r["torch"]["images_per_s"] else "1.13"
    fastest = r["torch2"] if r["faster"] == "2.x" else r["torch"]
    r["ratio"] = r["colobench"]["images_per_s"] / r["torch"]["images_per_s"]
    r["ratio_best"] = r["colobench"]["images_per_s"] / fastest["images_per_s"]
    return r


def merge(files):
    """Rows of several --json files (a run split over commands): each side's best run per row."""
    by_row = {}
    for name in files:
        try:
            with open(name) as f:
                rows = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit("nn_vs_torch: --merge: %s: %s" % (name, e))
        for r in rows:
            key = (r["model"], r["mode"], r["batch"], r["size"], r["threads"])
            part = {k: [r[k]] if r.get(k) and k != "torch2_runs" else r.get(k) or []
                    for k in ("torch", "torch2_runs", "colobench", "colobench_winograd")}
            by_row.setdefault(key, (r, []))[1].append(part)
    meta_keys = ("row", "model", "mode", "batch", "size", "threads")
    return sorted((combine({k: first[k] for k in meta_keys}, parts) for first, parts in by_row.values()),
                  key=lambda r: r["row"])


def fmt(r, key):
    return "-" if not r.get(key) else "%.2f" % r[key]["images_per_s"]


def print_header():
    print("%3s %-9s %-5s %5s %4s %3s | %9s %9s %9s | %9s | %6s %6s %-4s | %s" % (
        "row", "model", "mode", "batch", "size", "thr", "1.13 im/s", "2.x eager", "2.x comp",
        "ours im/s", "/1.13", "/best", "best", "our overhead"), flush=True)


def print_row(r):
    o, w = r["colobench"], r["colobench_winograd"]
    fastest = r["torch2"] if r["faster"] == "2.x" else r["torch"]
    print("%3d %-9s %-5s %5d %4d %3d | %9s %9s %9s | %9.2f | %5.2fx %5.2fx %-4s | %5.1f%%%s" % (
        r["row"], r["model"], r["mode"], r["batch"], r["size"], r["threads"], fmt(r, "torch"),
        fmt(r, "torch2_eager"), fmt(r, "torch2_compile"), o["images_per_s"], r["ratio"],
        r["ratio_best"], r["faster"], o.get("overhead_pct", float("nan")),
        "" if w is None else " | winograd %.2f im/s (%.2fx)" % (
            w["images_per_s"], w["images_per_s"] / fastest["images_per_s"])), flush=True)


def report(results, markdown):
    if markdown:
        print("| model | mode | batch | size | threads | PyTorch 1.13 | PyTorch 2.x eager | 2.x compiled "
              "| colobench | ratio to 1.13 | ratio to the faster | faster |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in results:
            lay = lambda k: "" if not r.get(k) or r[k]["layout"] == "channels_last" else " (contiguous)"
            print("| %s | %s | %d | %d | %d | %s%s | %s%s | %s | %.2f | %.2fx | %.2fx | %s%s |" % (
                r["model"].replace("resnet", "ResNet-"), r["mode"], r["batch"], r["size"], r["threads"],
                fmt(r, "torch"), lay("torch"), fmt(r, "torch2_eager"), lay("torch2_eager"),
                fmt(r, "torch2_compile"), r["colobench"]["images_per_s"], r["ratio"], r["ratio_best"],
                r["faster"], "" if r["faster"] == "1.13" else " " + how(r["torch2"])))
    versions = sorted({"%s (oneDNN %s)" % (r[k]["torch"], r[k].get("onednn"))
                       for r in results for k in ("torch", "torch2") if r.get(k)})
    print("nn_vs_torch: PyTorch %s" % ", ".join(versions))
    worst = min(r["ratio_best"] for r in results) if results else 0
    print("nn_vs_torch: %d configurations, lowest ratio to the faster PyTorch %.2fx" % (len(results), worst))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", default="")
    ap.add_argument("--rows", default="", help="1-based rows of the table to run, e.g. 1-4,9")
    ap.add_argument("--torch2", default=os.path.join(HERE, "..", ".venv-bench", "bin", "python"),
                    help="Python of PyTorch 2.x (default .venv-bench/, from scripts/setup.sh --bench)")
    ap.add_argument("--no-torch2", action="store_true", help="Debian's PyTorch only")
    ap.add_argument("--no-compile", action="store_true", help="PyTorch 2.x eager only")
    ap.add_argument("--prime", action="store_true",
                    help="only compile every selected configuration once (fills Inductor's cache; "
                         "no timing: run it unlocked before the timed run)")
    ap.add_argument("--markdown", action="store_true", help="also print the rows as a Markdown table")
    ap.add_argument("--winograd", action="store_true",
                    help="also measure colobench training with winograd: true (not PyTorch's algorithm)")
    ap.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                    help="no run: combine the --json files of a run split over commands")
    a = ap.parse_args()
    if a.merge:
        results = merge(a.merge)
        print_header()
        for r in results:
            print_row(r)
        report(results, a.markdown)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
        return
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 40)
    env["MALLOC_TRIM_THRESHOLD_"] = str(1 << 40)
    env["MALLOC_TOP_PAD_"] = str(1 << 30)
    env.pop("OMP_NUM_THREADS", None)
    ours = os.path.join(a.build, "bench_nn")
    theirs = os.path.join(HERE, "torch_resnet.py")
    torch2 = None if a.no_torch2 else a.torch2
    if torch2 and not os.access(torch2, os.X_OK):
        sys.exit("nn_vs_torch: %s not found: run scripts/setup.sh --bench for PyTorch 2.x, "
                 "or pass --no-torch2" % torch2)
    table = [(threads, cfg) for threads in [int(t) for t in a.threads.split(",")]
             for cfg in CONFIGS if not a.only or cfg[0] == a.only]
    rows = parse_rows(a.rows, len(table)) if a.rows else set(range(len(table)))
    plan = []
    for n, (threads, (model, mode, batch, size)) in enumerate(table):
        if n not in rows:
            continue
        steps = steps_for(model, mode, batch, size, threads, a.quick)
        warm = 2 if steps <= 4 else 3
        common = ["--model", model, "--mode", mode, "--batch", str(batch), "--threads",
                  str(threads), "--size", str(size), "--steps", str(steps), "--warmup", str(warm)]
        layouts = [["--layout", "channels_last"]] + ([["--layout", "contiguous"]] if mode == "infer" else [])
        variants2 = layouts + ([] if a.no_compile else [["--layout", "channels_last", "--compile"]])
        plan.append((n, threads, model, mode, batch, size, common, layouts, variants2))
    if a.prime:
        if not torch2 or a.no_compile:
            sys.exit("nn_vs_torch: --prime compiles for PyTorch 2.x: not with --no-torch2 or --no-compile")
        for n, threads, model, mode, batch, size, common, _, _ in plan:
            prime = common[:common.index("--steps")] + ["--steps", "1", "--warmup", "1"]
            r = run_json([torch2, theirs] + prime + ["--compile"], env)
            print("primed row %d (%s %s b%d, %d threads): first step %.1f s" % (
                n + 1, model, mode, batch, threads, r["first_step_s"]), flush=True)
        return
    results = []
    print_header()
    for n, threads, model, mode, batch, size, common, layouts, variants2 in plan:
        runs = {"torch": [], "torch2_runs": [], "colobench": []}
        for _ in range(a.rounds):
            runs["torch"].append(best([run_json([sys.executable, theirs] + common + v, env) for v in layouts]))
            if torch2:
                runs["torch2_runs"] += [run_json([torch2, theirs] + common + v, env) for v in variants2]
            runs["colobench"].append(run_json([ours] + common + ["--profile"], env))
        if a.winograd and mode == "train":
            runs["colobench_winograd"] = [run_json([ours] + common + ["--winograd", "1"], env)
                                          for _ in range(a.rounds)]
        r = combine({"row": n + 1, "model": model, "mode": mode, "batch": batch, "size": size,
                     "threads": threads}, [runs])
        print_row(r)
        results.append(r)
        if a.json:  # after every row: a run cut short keeps what it measured
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    report(results, a.markdown)


if __name__ == "__main__":
    main()
