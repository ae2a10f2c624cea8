#!/usr/bin/env python3
"""PyTorch's CPU throughput for one ResNet configuration: the reference colobench's nn stages are
compared against (as a ratio, measured on the same machine).

Run with the interpreter the project's setup installs PyTorch into (/usr/bin/python3, torch
1.13 / torchvision 0.14), one configuration per process, e.g.:

    MALLOC_MMAP_THRESHOLD_=68719476736 MALLOC_TRIM_THRESHOLD_=68719476736 \
        /usr/bin/python3 bench/torch_resnet.py --model resnet50 --mode train --batch 32 \
        --threads 8 --size 224 --steps 30 --warmup 5

and it prints one JSON line:

    {"model": "resnet50", "mode": "train", "batch": 32, "threads": 8, "size": 224,
     "images_per_s": ..., "step_ms_median": ...}

What is measured, and how it is tuned (PyTorch at its best on a CPU, so the ratio is fair):
  - torch.set_num_threads(threads) and one inter-op thread: the same compute threads as the
    colobench stage it is compared with.
  - channels_last (NHWC) for the model and the input: oneDNN's preferred layout, which avoids a
    reorder around every convolution.
  - train: model.train(), mean cross-entropy, torch.optim.SGD(lr 0.1, momentum 0.9,
    weight_decay 1e-4), zero_grad(set_to_none=True), one forward + backward + step per step.
  - infer: model.eval() under torch.no_grad(): one forward per step.
  - Synthetic data (normal images, uniform labels) made once before timing; `warmup` steps
    (oneDNN primitive creation, allocator growth) run first and are excluded. Each step is timed
    on its own; images_per_s = batch * steps / (sum of the timed steps), step_ms_median is the
    median step.

Run each configuration in a fresh process (the allocator's and oneDNN's caches of the previous
one would otherwise carry over) with glibc told to keep freed memory:
  - MALLOC_MMAP_THRESHOLD_=68719476736 (64 GiB, above any single allocation): every block comes
    from the heap instead of a fresh mmap, so activations freed at the end of a step are reused
    by the next one instead of being unmapped and faulted in again. (man mallopt gives 32 MiB as
    the ceiling for mallopt(M_MMAP_THRESHOLD); the environment variable is not held to it on
    glibc 2.36, checked with mallinfo2().hblks: a 40 MiB malloc stays off mmap. A glibc that
    refused the value would silently keep its dynamic threshold.)
  - MALLOC_TRIM_THRESHOLD_=68719476736 (64 GiB): glibc never returns the top of the heap to the
    kernel between steps.
Without them PyTorch's large per-step allocations pay page faults every step and the reference
looks slower than it is. The script warns on stderr when they are not set; stdout carries only
the JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

MODELS = ("resnet18", "resnet50")
MODES = ("train", "infer")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default="resnet50")
    p.add_argument("--mode", choices=MODES, default="train")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--size", type=int, default=224, help="image height and width")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("batch", "threads", "size", "steps", "classes"):
        if getattr(a, name) < 1:
            p.error("--%s must be >= 1" % name)
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    return a


def main(argv):
    a = parse_args(argv)
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if var not in os.environ:
            print("torch_resnet: %s is not set: glibc may unmap and re-fault memory every step "
                  "(see the header of this script)" % var, file=sys.stderr)
    import torch
    import torchvision

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set by an earlier parallel call; only possible when imported
    torch.manual_seed(a.seed)

    model = getattr(torchvision.models, a.model)(num_classes=a.classes)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,))

    if a.mode == "train":
        model.train()
        loss_fn = torch.nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    for _ in range(a.warmup):
        step()
    times_ns = []
    for _ in range(a.steps):
        t0 = time.perf_counter_ns()
        step()
        times_ns.append(time.perf_counter_ns() - t0)

    total_s = sum(times_ns) / 1e9
    print(json.dumps({
        "model": a.model,
        "mode": a.mode,
        "batch": a.batch,
        "threads": a.threads,
        "size": a.size,
        "images_per_s": round(a.batch * a.steps / total_s, 3),
        "step_ms_median": round(statistics.median(times_ns) / 1e6, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
