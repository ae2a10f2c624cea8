#!/usr/bin/python3
"""tests/nn_torch_ref.py - PyTorch's side of test_nn_torch: one torchvision ResNet, one batch,
eval-mode logits and one SGD training step, written out for the C test to compare against.

Usage: /usr/bin/python3 tests/nn_torch_ref.py ARCH OUTDIR [SIZE] [BATCH] [CLASSES] [F64]
       (ARCH resnet18|resnet34|resnet50; defaults 64, 4, 10, 0)

The model is torchvision.models.ARCH(num_classes=CLASSES) with seed 0, its batch norms
randomized (affine and running statistics away from identity, num_batches_tracked 3) so a wrong
use of either shows.

Away from the kinks. A ReLU's gradient jumps where its input crosses 0 and a max pool's where its
two largest inputs swap. Some of the million ReLU inputs of a training forward are always within
float32's rounding error of 0 (resnet50 here: 165 within one error), and there two correct
float32 implementations (PyTorch's and ours, or PyTorch's on AVX2 and on AVX-512) may take
opposite sides. One such element passes or drops its whole upstream gradient: every gradient
below it moves by 1e-3 to 1e-1 of its largest value, far beyond rounding. (PyTorch's float32
gradients differed from float64 by up to 13% for resnet50 and 4.6% for resnet18 for exactly that
reason: 11 and 1 ReLU decisions; with the float64 backward taking the same decisions the
difference is 2e-4 and 1e-5.) A comparison of gradients is only meaningful where the float32
forward cannot change a decision, so this script moves the test point there before anything is
written:
  - each ReLU input's channel is shifted away from 0 (through the bias of the batch norm that
    produces it: in training mode a channel's output moves by exactly that bias) until, in
    float64, every element is at least MARGIN x float32's error on that tensor away from 0, that
    error measured as PyTorch's float32 forward against float64's (ours is up to 3x PyTorch's).
    Shifts reach 0.3% of the batch norm's weight for resnet18 and 20% for resnet50, whose last
    layers have 16 values per channel and errors of 1e-4 of their scale;
  - the input batch is redrawn until no max-pool window's two largest positive inputs are
    within TIE_MARGIN x that error of each other;
and then checks the point it wrote: every ReLU input at least CHECK x float32's error from 0 and
every max-pool maximum unique by TIE_MARGIN x it, or it exits non-zero saying which.

Everything goes to OUTDIR as one file of little-endian tensors, data.bin, and an index,
index.txt, one line per tensor:

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
    kinks/margin    min over ReLU inputs of |x| in float64 / float32's error on that tensor (f64)
    kinks/tie       min over max-pool windows of (largest - second largest) / that error (f64)
  with F64 = 1, also the same training forward and backward in float64 (the exact answer float32
  approximates):
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
MARGIN = 40      # ReLU inputs are moved this many float32 errors away from 0 ...
CHECK = 20       # ... and must be at least this many away in the point written
TIE_MARGIN = 10  # max-pool maxima must be unique by this many float32 errors


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


def away_from_zero(v, mu):
    """The shift d of smallest |d| for which every |v + d| >= mu (v: 1-D float64 array)."""
    lo = np.sort(-v) - mu
    hi = lo + 2 * mu
    a, b = lo[0], hi[0]
    for l, h in zip(lo[1:], hi[1:]):  # the union of the forbidden intervals, in order
        if l > b:
            if a < 0 < b:
                break
            a, b = l, h
        else:
            b = max(b, h)
    if not a < 0 < b:
        return 0.0
    return b if b < -a else a


class Relu(torch.nn.Module):
    """Stands in for a torchvision block's ReLU (one module called once after each of the block's
    batch norms, in place): call k of a forward follows bns[k]. With a log (a list shared by the
    network's ReLUs) it records its input; with `nudge` (a margin per ReLU call of the network)
    it first shifts each channel of its input away from 0 by adding the shift to that batch
    norm's bias, which in training mode moves the batch norm's output, so this input, by exactly
    that much."""

    def __init__(self, bns):
        super().__init__()
        self.bns, self.k, self.log, self.nudge = bns, 0, None, None

    def forward(self, x):
        bn = self.bns[self.k % len(self.bns)]
        self.k += 1
        if self.nudge is not None:
            mu = self.nudge[len(self.log)]
            xs = x.detach().numpy()
            d = np.zeros(x.shape[1])
            for c in np.nonzero((np.abs(xs) < mu).any(axis=(0, 2, 3)))[0]:
                d[c] = away_from_zero(xs[:, c].ravel(), mu)
            d = torch.from_numpy(d).to(x.dtype)
            bn.bias.data += d
            x = x + d.view(1, -1, 1, 1)
        if self.log is not None:
            self.log.append(x.detach())
        return torch.relu(x)


def instrument(model):
    """Replaces the ReLUs of a torchvision ResNet by Relu."""
    model.relus = [Relu([model.bn1])]
    model.relu = model.relus[0]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for blk in layer:
            blk.relu = Relu([blk.bn1, blk.bn2] + ([blk.bn3] if hasattr(blk, "bn3") else []))
            model.relus.append(blk.relu)


def relu_inputs(model, x, nudge=None):
    """The inputs of every ReLU call of a training-mode forward of a copy of model, in float32 and
    float64 (with nudge: of the float64 copy, nudged, which is returned too); the model itself,
    running statistics included, stays as it is."""
    out = []
    for dtype in (torch.float64,) if nudge else (torch.float32, torch.float64):
        m = copy.deepcopy(model).to(dtype)
        log = []
        for r in m.relus:
            r.k, r.log, r.nudge = 0, log, nudge
        m.train()
        with torch.no_grad():
            m(x.to(dtype))
        out.append(log)
    return out + [m]


def stem_ties(model, x):
    """The max-pool windows (over the stem's ReLU output, in float64) whose two largest positive
    inputs are within TIE_MARGIN x float32's error on that output of each other, and the
    smallest gap in those errors."""
    z = []
    for dtype in (torch.float32, torch.float64):
        conv, bn = copy.deepcopy(model.conv1).to(dtype), copy.deepcopy(model.bn1).to(dtype)
        with torch.no_grad():
            z.append(torch.relu(torch.nn.functional.batch_norm(
                conv(x.to(dtype)), None, None, bn.weight, bn.bias, True, 0.0, bn.eps)))
    err = float((z[0].double() - z[1]).abs().max())
    n, c, h, w = z[1].shape
    mp = model.maxpool
    cols = torch.nn.functional.unfold(z[1].reshape(n * c, 1, h, w), mp.kernel_size,
                                      padding=mp.padding, stride=mp.stride)
    top = cols.topk(2, dim=1).values  # zero padding: a positive maximum is never a pad
    gap = (top[:, 0] - top[:, 1])[top[:, 0] > 0]
    return int((gap < TIE_MARGIN * err).sum()), float(gap.min()) / err


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
    instrument(model)
    # Away from the kinks (the module comment): a batch whose max-pool maxima are unique, then
    # each ReLU input shifted off 0, one after the other in forward order, in float64.
    for _ in range(100):
        x = torch.randn(batch, 3, size, size)
        if stem_ties(model, x)[0] == 0:
            break
    else:
        sys.exit("nn_torch_ref.py: no batch of 100 has unique max-pool maxima")
    a32, a64, _ = relu_inputs(model, x)
    err = [float((a.double() - b).abs().max()) for a, b in zip(a32, a64)]
    _, nudged = relu_inputs(model, x, [MARGIN * e for e in err])
    with torch.no_grad():
        for p, p64 in zip(model.parameters(), nudged.parameters()):
            p.copy_(p64)
    a32, a64, _ = relu_inputs(model, x)
    margin, where = min((float(b.abs().min() / (a.double() - b).abs().max()), i)
                        for i, (a, b) in enumerate(zip(a32, a64)))
    ties, tie = stem_ties(model, x)
    if margin < CHECK or ties:
        sys.exit("nn_torch_ref.py: the test point is too near a kink: ReLU call %d has an input "
                 "%.1f float32 errors from 0, %d max-pool windows have near ties"
                 % (where, margin, ties))
    y = torch.randint(0, classes, (batch,))
    model64 = copy.deepcopy(model).double() if f64 else None
    w = Writer(outdir)
    w.put("kinks/margin", torch.tensor([margin]), "f64")
    w.put("kinks/tie", torch.tensor([tie]), "f64")
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
