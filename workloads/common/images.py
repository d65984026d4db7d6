"""Offline loaders for the real image sets shipped under `data/` (see each folder's PROVENANCE.md).

Both loaders return plain numpy: uint8 pixels and int64 labels in 0..9, so any workload can turn
them into tensors its own way. Paths resolve against the repository root, not the working
directory, so tests and CLIs work from anywhere.
"""
from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np

from workloads.common.paths import DATA_ROOT

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
MNIST_SPLIT_SEED = 0      # fixed permutation of the 10k official test digits
MNIST_TRAIN_SIZE = 8_000  # the remaining 2,000 form our held-out test split
SPLITS = ("train", "test")


def load_cifar10(split: str, root: Path = DATA_ROOT / "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 subset: images (N, 32, 32, 3) uint8 RGB, labels (N,) int64.

    train = 4,000 images (400/class), test = 2,000 (200/class); the label is the class folder in
    the zip member name `<split>/<class>/NNNN.jpg`.
    """
    _check_split(split)
    from PIL import Image  # only this loader needs Pillow

    with zipfile.ZipFile(Path(root) / f"{split}_subset_jpg.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        images = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB"))
                           for n in names])
    labels = np.array([CIFAR10_CLASSES.index(n.split("/")[1]) for n in names], dtype=np.int64)
    return images, labels


def load_mnist(split: str, root: Path = DATA_ROOT / "mnist") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits: images (N, 28, 28) uint8, labels (N,) int64.

    Only the official 10k test set is available offline, so it is split by a fixed permutation
    into 8,000 "train" and 2,000 "test" digits (disjoint, identical on every call).
    """
    _check_split(split)
    images, labels = _read_idx_pair(Path(root), "t10k")
    order = np.random.default_rng(MNIST_SPLIT_SEED).permutation(len(labels))
    part = order[:MNIST_TRAIN_SIZE] if split == "train" else order[MNIST_TRAIN_SIZE:]
    return images[part], labels[part]


def _read_idx_pair(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a gzip'd IDX image/label pair (offsets 16 and 8 skip the IDX headers)."""
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images.copy(), labels


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
