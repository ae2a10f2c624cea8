#!/usr/bin/env python3
"""scripts/make_cifar.py - writes a small dataset in the CIFAR-10 binary format.

The real CIFAR-10 cannot be downloaded on these machines, so examples and tests use a
generated one with the same file layout (data_batch_1.bin .. data_batch_N.bin, test_batch.bin;
each record 1 label byte + 3072 bytes: the R, G and B planes of a 32x32 image) and a pattern a
small network can learn: class k has a bright 8x8 square at a position that depends on k, in a
colour that depends on k, on noise. Deterministic from --seed. Plain Python, no packages.

Usage: scripts/make_cifar.py DIR [--train 5000] [--test 1000] [--files 1] [--seed 1]
Point data.cifar's `path` at DIR; with the real dataset, point it at cifar-10-batches-bin/.
"""
import argparse
import os
import random


def record(rng, label):
    px = bytearray(3072)
    for i in range(3072):
        px[i] = rng.randrange(0, 96)
    y0, x0 = 4 + 6 * (label // 4 % 3), 4 + 6 * (label % 4)
    colour = [(label * 97 + 60) % 256, (label * 57 + 120) % 256, (label * 31 + 200) % 256]
    for c in range(3):
        for y in range(y0, y0 + 8):
            for x in range(x0, x0 + 8):
                px[c * 1024 + y * 32 + x] = min(255, colour[c] // 2 + 128)
    return bytes([label]) + bytes(px)


def write(path, rng, n):
    with open(path + ".tmp", "wb") as f:
        for i in range(n):
            f.write(record(rng, rng.randrange(10)))
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rng = random.Random(a.seed)
    per = (a.train + a.files - 1) // a.files
    left = a.train
    for i in range(a.files):
        n = min(per, left)
        left -= n
        write(os.path.join(a.dir, "data_batch_%d.bin" % (i + 1)), rng, n)
    write(os.path.join(a.dir, "test_batch.bin"), rng, a.test)
    print("make_cifar: %d train and %d test records in %s" % (a.train, a.test, a.dir))


if __name__ == "__main__":
    main()
