"""CIFAR-10 data: fetch and verify the official archive, read it safely, and write seeded splits.

A split on disk is `<name>-images.npy` (N, 32, 32, 3) uint8 and `<name>-labels.npy` (N,) int64, read
memory-mapped so that a subset costs only its own images; in memory it is a `Split` of tensors that the
training engine augments a whole batch at a time.
"""

from cifarbench.data.splits import CLASSES, Split, load_split

__all__ = ["CLASSES", "Split", "load_split"]
