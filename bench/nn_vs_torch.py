#!/usr/bin/python3
"""bench/nn_vs_torch.py - colobench's CPU neural-network layer against PyTorch, same machine,
same run.

For every configuration of issue 5 (ResNet-18/50 training at 224x224 batch 16 and 32, inference
batch 1 and 32, ResNet-18 training at 32x32 batch 128; each at 1 and 2 threads) it runs
build/bench_nn and bench/torch_resnet.py, each configuration in a fresh process, alternating
the two sides (A B A B ...) `--rounds` times so drift in the machine hits both, and prints the
best round of each side and the ratio colobench / PyTorch.

PyTorch is measured at its best, not as installed: torch.set_num_threads(N), channels_last
model and input (for inference the faster of channels_last and contiguous), and glibc told to keep freed memory (MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ set high: stock malloc returns and re-faults the large activation buffers
every step). colobench gets the same environment.

Usage: /usr/bin/python3 bench/nn_vs_torch.py [--build build] [--rounds 2] [--quick]
       [--only resnet18] [--threads 1,2] [--json FILE]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", default="")
    ap.add_argument("--winograd", action="store_true",
                    help="also measure colobench training with winograd: true (not PyTorch's algorithm)")
    a = ap.parse_args()
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 40)
    env["MALLOC_TRIM_THRESHOLD_"] = str(1 << 40)
    env["MALLOC_TOP_PAD_"] = str(1 << 30)
    env.pop("OMP_NUM_THREADS", None)
    ours = os.path.join(a.build, "bench_nn")
    theirs = os.path.join(HERE, "torch_resnet.py")
    results = []
    print("%-9s %-5s %5s %4s %3s | %10s %10s | %6s | %s" % (
        "model", "mode", "batch", "size", "thr", "torch im/s", "ours im/s", "ratio", "our overhead"))
    for threads in [int(t) for t in a.threads.split(",")]:
        for model, mode, batch, size in CONFIGS:
            if a.only and model != a.only:
                continue
            steps = steps_for(model, mode, batch, size, threads, a.quick)
            warm = 2 if steps <= 4 else 3
            common = ["--model", model, "--mode", mode, "--batch", str(batch), "--threads",
                      str(threads), "--size", str(size), "--steps", str(steps), "--warmup", str(warm)]
            best_t = best_o = None
            layouts = ["channels_last"] + (["contiguous"] if mode == "infer" else [])
            for _ in range(a.rounds):
                t = max((run_json([sys.executable, theirs] + common + ["--layout", l], env) for l in layouts),
                        key=lambda r: r["images_per_s"])
                o = run_json([ours] + common + ["--profile"], env)
                if best_t is None or t["images_per_s"] > best_t["images_per_s"]:
                    best_t = t
                if best_o is None or o["images_per_s"] > best_o["images_per_s"]:
                    best_o = o
            ratio = best_o["images_per_s"] / best_t["images_per_s"]
            wino = None
            if a.winograd and mode == "train":
                wino = max((run_json([ours] + common + ["--winograd", "1"], env) for _ in range(a.rounds)),
                           key=lambda r: r["images_per_s"])
            print("%-9s %-5s %5d %4d %3d | %10.2f %10.2f | %5.2fx | %5.1f%%%s" % (
                model, mode, batch, size, threads, best_t["images_per_s"], best_o["images_per_s"],
                ratio, best_o.get("overhead_pct", float("nan")),
                "" if wino is None else " | winograd %.2f im/s (%.2fx)" % (
                    wino["images_per_s"], wino["images_per_s"] / best_t["images_per_s"])), flush=True)
            results.append({"model": model, "mode": mode, "batch": batch, "size": size,
                            "threads": threads, "torch": best_t, "colobench": best_o, "ratio": ratio,
                            "colobench_winograd": wino})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    worst = min(r["ratio"] for r in results) if results else 0
    print("nn_vs_torch: %d configurations, lowest ratio %.2fx" % (len(results), worst))


if __name__ == "__main__":
    main()
