#!/usr/bin/env python3
"""bench/torch_gpu.py - PyTorch's training images/s on one CUDA GPU: the reference for
colobench's CUDA backend (bench/gpu_vs_torch.sh runs both and prints the ratios).

What it does, as a careful PyTorch user would:
- torchvision ResNet (random initialization, 1000 classes unless --classes), random input and
  labels made once (no data loading in the timed loop), where --input says:
    device  (default) made once on the GPU and used by every step: the model's step alone;
    host    made once in pinned host memory (torch.randn(...).pin_memory(); the labels too) and
            copied to the GPU in every timed step with .to(device, non_blocking=True), as a
            training loop fed by a DataLoader with pin_memory=True does; this is what
            colobench's executor does (it copies each batch from pinned staging), so
            bench/gpu_vs_torch.sh compares colobench with this mode like with like;
- training: SGD(lr 0.1, momentum 0.9), cross-entropy, zero_grad(set_to_none=True);
- torch.backends.cudnn.benchmark = True (cuDNN times its algorithms per layer shape once, in
  the warm-up);
- precision:
    fp32  strict float32: torch.backends.cudnn.allow_tf32 = False and
          torch.backends.cuda.matmul.allow_tf32 = False. PyTorch's DEFAULT IS NOT THIS: it
          allows TF32 in cuDNN convolutions (cudnn.allow_tf32 = True) and not in matmuls;
    tf32  both allowed (TF32 tensor cores for convolutions and matmuls);
    bf16  torch.autocast(device_type="cuda", dtype=torch.bfloat16) around forward and loss;
    fp16  torch.autocast(..., dtype=torch.float16) with a GradScaler (dynamic
          loss scaling);
- --channels-last: model and input in torch.channels_last (NHWC, the tensor cores' layout);
- timing: a CUDA event pair around every step, read after one synchronize at the end (no
  synchronization inside the loop); warm-up steps excluded; images_per_s = batch / median step
  time; images_per_s_wall = batch x steps / wall time of the timed steps (synchronized).
Prints one JSON line ("input": "device" or "host" says which mode). Exit 1 with a message when
PyTorch, torchvision or CUDA is unavailable.

Usage: bench/torch_gpu.py --model resnet18 --batch 64 --size 224 --steps 50 --warmup 10
       --precision fp32 [--input device|host] [--channels-last] [--device cuda:0]
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--input", default="device", choices=["device", "host"],
                    help="device: inputs made once on the GPU; host: a pinned host batch copied "
                         "to the GPU in every step (non_blocking)")
    ap.add_argument("--device", default="cuda:0")
    a = ap.parse_args()
    if a.batch < 1 or a.steps < 1 or a.warmup < 0 or a.size < 1:
        ap.error("batch, steps and size must be >= 1, warmup >= 0")

    try:
        import torch
        import torchvision
    except ImportError as e:
        print("torch_gpu: PyTorch with torchvision is needed: %s" % e, file=sys.stderr)
        return 1

    if not torch.cuda.is_available():
        print("torch_gpu: CUDA is not available to PyTorch (no GPU, no driver, or a CPU-only "
              "build: torch %s)" % torch.__version__, file=sys.stderr)
        return 1
    dev = torch.device(a.device)
    torch.cuda.set_device(dev)
    torch.backends.cudnn.benchmark = True
    tf32 = a.precision != "fp32"
    # fp32 must be strict: PyTorch's default allows TF32 in cuDNN convolutions.
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = None
    if a.precision == "fp16":
        try:
            scaler = torch.amp.GradScaler("cuda")
        except (AttributeError, TypeError):  # torch < 2.3
            scaler = torch.cuda.amp.GradScaler()

    torch.manual_seed(1)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = getattr(torchvision.models, a.model)(num_classes=a.classes)
    model = model.to(dev, memory_format=fmt).train()
    shape = (a.batch, 3, a.size, a.size)
    if a.input == "device":
        x_dev = torch.randn(*shape, device=dev).to(memory_format=fmt)
        y_dev = torch.randint(0, a.classes, (a.batch,), device=dev)
    else:
        # Pinned host memory in the model's layout (torch.empty keeps memory_format and
        # pin_memory together), so the copy is one DMA into a tensor the model takes as it is.
        x_host = torch.empty(shape, dtype=torch.float32, memory_format=fmt, pin_memory=True)
        x_host.copy_(torch.randn(*shape))
        y_host = torch.randint(0, a.classes, (a.batch,)).pin_memory()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        if a.input == "device":
            x, y = x_dev, y_dev
        else:  # inside the timed step, like colobench's copy from its pinned staging
            x = x_host.to(dev, non_blocking=True)
            y = y_host.to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        if amp_dtype is not None:
            with torch.autocast(device_type="cuda", dtype=amp_dtype):
                loss = lossf(model(x), y)
        else:
            loss = lossf(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(dev)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(a.steps)]
    t0 = time.perf_counter()
    loss = None
    for s, e in events:
        s.record()
        loss = step()
        e.record()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    ms = [s.elapsed_time(e) for s, e in events]
    med = statistics.median(ms)
    r = {"impl": "pytorch", "torch": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version(), "gpu": torch.cuda.get_device_name(dev),
         "model": a.model, "mode": "train", "batch": a.batch, "size": a.size,
         "precision": a.precision, "input": a.input, "channels_last": a.channels_last,
         "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
         "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
         "steps": a.steps, "warmup": a.warmup,
         "images_per_s": a.batch / (med / 1e3),
         "images_per_s_wall": a.batch * a.steps / wall,
         "step_ms_median": med, "step_ms_min": min(ms), "step_ms_max": max(ms),
         "mem_peak_bytes": torch.cuda.max_memory_allocated(dev),
         "loss": float(loss.item())}
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
