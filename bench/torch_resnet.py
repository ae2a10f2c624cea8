#!/usr/bin/python3
"""bench/torch_resnet.py - PyTorch's images/s for one configuration (the baseline of
bench/nn_vs_torch.py), tuned as a careful user would tune it:

- torch.set_num_threads(N) (Debian's build defaults to one thread here), one inter-op thread;
- channels_last model and input (oneDNN's preferred layout for convolutions on CPU); the driver
  also tries the default contiguous layout for inference and keeps the faster (Debian's 1.13
  build has a pathological channels_last path for ResNet-50 at batch 1 on one thread);
- training: SGD(lr 0.01, momentum 0.9, weight_decay 1e-4), zero_grad(set_to_none=True);
- inference: model.eval() under torch.inference_mode();
- the caller sets MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ so glibc keeps freed memory
  between steps instead of returning and re-faulting the large buffers;
- --compile (PyTorch 2.x): torch.compile's default Inductor backend on the model; for
  inference with freezing on (weights folded into the graph, convolutions prepacked for oneDNN,
  what Inductor recommends for CPU inference). Compilation happens in the warm-up steps;
  Inductor's on-disk cache (/tmp/torchinductor_$USER) makes a repeated configuration start fast;
- warm-up steps excluded; images / median step time, as bench_nn reports.
Run one configuration per process. Prints one JSON line, with the torch and oneDNN versions.

Usage: python3 bench/torch_resnet.py --model resnet18 --mode train --batch 32
       --threads 2 --size 224 --steps 10 --warmup 3 [--classes 1000] [--compile]
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--mode", default="train", choices=["train", "infer"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layout", default="channels_last", choices=["channels_last", "contiguous"],
                    help="memory format of model and input (the driver tries both for inference)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (PyTorch 2.x; Inductor, freezing for inference)")
    a = ap.parse_args()
    if a.compile and not hasattr(torch, "compile"):
        sys.exit("torch_resnet: --compile needs PyTorch 2.x (this is %s)" % torch.__version__)
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if var not in os.environ:
            print("torch_resnet: %s is not set: glibc may unmap and re-fault the large buffers "
                  "every step (bench/nn_vs_torch.py sets it)" % var, file=sys.stderr)
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(1)
    model = getattr(torchvision.models, a.model)(num_classes=a.classes)
    fmt = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(a.batch, 3, a.size, a.size).to(memory_format=fmt)
    y = torch.randint(0, a.classes, (a.batch,))
    if a.compile:
        if a.mode == "infer":
            from torch._inductor import config as inductor_config
            inductor_config.freezing = True
        step_model = torch.compile(model)
    else:
        step_model = model
    times = []
    first_s = None
    loss_v = None
    if a.mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        lossf = torch.nn.CrossEntropyLoss()
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = lossf(step_model(x), y)
            loss.backward()
            opt.step()
            loss_v = loss.item()
            if i == 0:
                first_s = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
    else:
        model.eval()
        with torch.inference_mode():
            for i in range(a.warmup + a.steps):
                t0 = time.perf_counter()
                out = step_model(x)
                out.sum().item()
                if i == 0:
                    first_s = time.perf_counter() - t0
                if i >= a.warmup:
                    times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    dnn = re.search(r"(?:MKL-DNN|oneDNN) (v[0-9.]+)", torch.__config__.show())
    r = {"impl": "pytorch", "torch": torch.__version__, "onednn": dnn.group(1) if dnn else None,
         "model": a.model, "mode": a.mode, "batch": a.batch, "threads": a.threads, "size": a.size,
         "layout": a.layout, "compile": a.compile, "first_step_s": first_s,
         "images_per_s": a.batch / med, "images_per_s_mean": a.batch * len(times) / sum(times),
         "step_ms_median": med * 1e3}
    if loss_v is not None:
        r["loss"] = loss_v
    print(json.dumps(r))


if __name__ == "__main__":
    main()
