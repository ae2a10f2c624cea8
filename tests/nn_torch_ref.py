#!/usr/bin/python3
"""tests/nn_torch_ref.py - PyTorch's side of test_nn_torch: one torchvision ResNet, one batch,
eval-mode logits and one SGD training step, written out for the C test to compare against.

Usage: /usr/bin/python3 tests/nn_torch_ref.py ARCH OUTDIR [SIZE] [BATCH] [CLASSES] [F64]
       (ARCH resnet18|resnet34|resnet50; defaults 64, 4, 10, 0)

The model is torchvision.models.ARCH(num_classes=CLASSES) with seed 0, its batch norms
randomized (affine and running statistics away from identity, num_batches_tracked 3) so a wrong
use of either shows. Everything goes to OUTDIR as one file of little-endian tensors, data.bin,
and an index, index.txt, one line per tensor:

    NAME DTYPE NDIM DIM... OFFSET        (DTYPE f32|f64|i64|i32, OFFSET in bytes into data.bin)

Tensors:
    init/KEY        every state-dict entry before training (num_batches_tracked as i64)
    input, labels   the batch [BATCH, 3, SIZE, SIZE] (f32) and its labels (i32)
    eval/logits     model.eval() forward
    train/logits    model.train() forward (batch statistics)
    train/loss      mean cross-entropy of that forward (f64)
    grad/KEY        d loss / d parameter, for a few parameters across the network
    after/KEY       every state-dict entry after optimizer.step() with
                    SGD(lr 0.1, momentum 0.9, weight_decay 1e-4) (with F64: the buffers and
                    the parameters of grad/ only)
  with F64 = 1, also the same training forward and backward in float64 (the exact answer float32
  approximates; deep ResNets in training mode are ill-conditioned enough that float32 gradients
  differ from it by percents, PyTorch's as well as ours):
    grad64/KEY      d loss / d parameter in float64 (f64)
    err32/KEY       PyTorch's own float32 error on it: max |grad - grad64| / max |grad64| (f64)
    train/loss64    the loss in float64 (f64)
"""
import copy
import os
import sys

import numpy as np
import torch
import torchvision

GRADS = {
    "resnet18": ["conv1.weight", "layer1.0.bn1.weight", "layer4.1.conv2.weight", "fc.weight",
                 "fc.bias"],
    "resnet34": ["conv1.weight", "layer1.0.bn1.weight", "layer4.2.conv2.weight", "fc.weight",
                 "fc.bias"],
    "resnet50": ["conv1.weight", "layer1.0.bn1.weight", "layer1.0.downsample.0.weight",
                 "layer4.2.conv3.weight", "fc.weight", "fc.bias"],
}


class Writer:
    def __init__(self, outdir):
        self.data = open(os.path.join(outdir, "data.bin"), "wb")
        self.index = open(os.path.join(outdir, "index.txt"), "w")
        self.offset = 0

    def put(self, name, t, dtype="f32"):
        np_type = {"f32": "<f4", "f64": "<f8", "i64": "<i8", "i32": "<i4"}[dtype]
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype(np_type))
        fields = [name, dtype, str(a.ndim)] + [str(d) for d in a.shape] + [str(self.offset)]
        self.index.write(" ".join(fields) + "\n")
        b = a.tobytes()
        self.data.write(b)
        self.offset += len(b)

    def state(self, prefix, model, only=None):
        params = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            if only is None or k not in params or k in only:
                self.put(prefix + k, v, "i64" if v.dtype == torch.int64 else "f32")

    def close(self):
        self.data.close()
        self.index.close()


def main():
    arch, outdir = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    classes = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    f64 = len(sys.argv) > 6 and sys.argv[6] == "1"
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = getattr(torchvision.models, arch)(num_classes=classes)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(3)
    model64 = copy.deepcopy(model).double() if f64 else None
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    w = Writer(outdir)
    w.state("init/", model)
    w.put("input", x)
    w.put("labels", y, "i32")

    model.eval()
    with torch.no_grad():
        w.put("eval/logits", model(x))

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    w.put("train/logits", logits)
    w.put("train/loss", loss.reshape(1), "f64")
    params = dict(model.named_parameters())
    for k in GRADS[arch]:
        w.put("grad/" + k, params[k].grad)
    opt.step()
    w.state("after/", model, GRADS[arch] if f64 else None)
    if f64:
        model64.train()
        loss64 = torch.nn.functional.cross_entropy(model64(x.double()), y)
        loss64.backward()
        w.put("train/loss64", loss64.reshape(1), "f64")
        params64 = dict(model64.named_parameters())
        for k in GRADS[arch]:
            g64 = params64[k].grad
            w.put("grad64/" + k, g64, "f64")
            err = (params[k].grad.double() - g64).abs().max() / g64.abs().max()
            w.put("err32/" + k, err.reshape(1), "f64")
    w.close()


if __name__ == "__main__":
    main()
