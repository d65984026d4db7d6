"""The measured profile of each multi-exit DNN: what the market needs to price inference.

`profiles.json` (shipped beside this file) is written by `python -m workloads.aeria.profiling`,
which builds the four multi-exit nets, measures per-layer FLOPs, activation bytes and CPU latency
with forward hooks, trains the nets briefly on real CIFAR-10 / MNIST images and measures each exit's
test accuracy. The market only reads it, through `load_profiles`.

Layer l (0-based) is a partition point: the device runs layers 0..p-1 and sends the activation of
layer p-1 (or the raw input when p == 0) to the edge. Exit e sits after layer `exit_after[e]` and
costs `exit_head_flops[e]` extra FLOPs to evaluate.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_PATH = Path(__file__).with_name("profiles.json")


@dataclass(frozen=True)
class DnnProfile:
    name: str                      # e.g. "branchy_alexnet"
    dataset: str                   # the images its exit accuracies were measured on
    input_bytes: float             # bytes of one raw input sample (sent when p == 0)
    layer_names: tuple[str, ...]
    layer_flops: np.ndarray        # (L,) FLOPs of each backbone layer for one sample
    layer_out_bytes: np.ndarray    # (L,) bytes of each layer's output activation (float32)
    layer_cpu_ms: np.ndarray       # (L,) measured latency of each layer on the profiling CPU
    exit_after: np.ndarray         # (E,) index of the backbone layer each exit branches from
    exit_head_flops: np.ndarray    # (E,) FLOPs of each exit head
    exit_accuracy: np.ndarray      # (E,) measured top-1 test accuracy of each exit, in [0, 1]

    @property
    def num_layers(self) -> int:
        return len(self.layer_flops)

    @property
    def num_exits(self) -> int:
        return len(self.exit_after)


def load_profiles(path: str | Path = DEFAULT_PATH) -> dict[str, DnnProfile]:
    """Read the profile table: {dnn name: DnnProfile}, in file order."""
    raw = json.loads(Path(path).read_text())
    return {name: _profile(name, d) for name, d in raw["dnns"].items()}


def _profile(name: str, d: dict) -> DnnProfile:
    layers, exits = d["layers"], d["exits"]
    arr = lambda rows, k: np.asarray([r[k] for r in rows], dtype=float)  # noqa: E731
    return DnnProfile(
        name=name, dataset=d["dataset"], input_bytes=float(d["input_bytes"]),
        layer_names=tuple(r["name"] for r in layers),
        layer_flops=arr(layers, "flops"), layer_out_bytes=arr(layers, "out_bytes"),
        layer_cpu_ms=arr(layers, "cpu_ms"),
        exit_after=np.asarray([e["after_layer"] for e in exits], dtype=int),
        exit_head_flops=arr(exits, "head_flops"), exit_accuracy=arr(exits, "accuracy"))
