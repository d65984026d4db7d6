"""Measure the multi-exit DNNs and write the profile table the aeria market prices from.

For each net in `dnn.DNNS` this measures, per backbone layer (partition point):
- `flops`: 2 x multiply-accumulates of every `Conv2d` (grouped/depthwise included) and `Linear`
  inside the layer, for one sample, counted by forward hooks. Bias adds, BatchNorm, activations,
  pooling and residual adds are NOT counted (they are <5% of the conv/linear work here).
- `out_bytes`: float32 bytes (numel x 4) of the layer's output for one sample.
- `cpu_ms`: median wall time of the layer over repeated single-sample `no_grad` forwards with
  one torch thread (what one edge/device core would see).
and per exit the head's FLOPs (same counting) and top-1 accuracy on held-out real images after
a short joint training of all exits (BranchyNet: weighted sum of every exit's loss).

CLI: `python -m workloads.aeria.profiling --out workloads/aeria/profiles.json --epochs N --seed 0`
writes the JSON read by `workloads.aeria.profiles.load_profiles`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workloads.aeria.dnn import DNNS, MultiExitNet
from workloads.common.images import load_cifar10, load_mnist

log = logging.getLogger(__name__)

BYTES_PER_FLOAT32 = 4
LOADERS = {"cifar10": load_cifar10, "mnist": load_mnist}
HFLIP_AUGMENT = {"cifar10": True, "mnist": False}   # mirrored digits are not digits


# ---- static measurements (hooks) ---------------------------------------------------------------

def module_flops(module: nn.Module, out: torch.Tensor) -> int:
    """FLOPs (2 x MACs) of one Conv2d/Linear call, per sample; 0 for any other module."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2 * out[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features
    return 0


def count_flops(net: MultiExitNet, x: torch.Tensor) -> tuple[list[int], list[int]]:
    """Per-sample FLOPs of each backbone layer and of each exit head, via forward hooks.

    Each Conv2d/Linear is attributed to the backbone layer or exit head that contains it.
    """
    layer_flops, head_flops = [0] * len(net.layers), [0] * len(net.exits)
    hooks = [(leaf, _flop_adder(totals, index))
             for owners, totals in ((net.layers, layer_flops), (net.exits, head_flops))
             for index, owner in enumerate(owners)
             for leaf in owner.modules() if isinstance(leaf, (nn.Conv2d, nn.Linear))]
    _forward_one_sample_with_hooks(net, x, hooks)
    return layer_flops, head_flops


def _forward_one_sample_with_hooks(net: MultiExitNet, x: torch.Tensor, hooks: list) -> None:
    """One eval-mode forward of x[:1] with (module, hook) pairs attached, then detached."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            net.eval()(x[:1])
    finally:
        for handle in handles:
            handle.remove()


def _flop_adder(totals: list[int], index: int):
    def hook(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        totals[index] += module_flops(module, out)
    return hook


def layer_output_bytes(net: MultiExitNet, x: torch.Tensor) -> list[int]:
    """float32 bytes of each backbone layer's output for one sample (what a split sends)."""
    sizes: list[int] = [0] * len(net.layers)
    _forward_one_sample_with_hooks(
        net, x, [(layer, _size_recorder(sizes, i)) for i, layer in enumerate(net.layers)])
    return sizes


def _size_recorder(sizes: list[int], index: int):
    def hook(_module: nn.Module, _inputs, out: torch.Tensor) -> None:
        sizes[index] = out[0].numel() * BYTES_PER_FLOAT32
    return hook


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Time on one core: per-layer latencies stay comparable across machines and runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_layer_latency(net: MultiExitNet, x: torch.Tensor, repeats: int = 30,
                          warmup: int = 5) -> list[float]:
    """Median ms of each backbone layer over `repeats` single-sample no-grad forwards."""
    samples: list[list[float]] = [[] for _ in net.layers]
    net.eval()
    with single_thread(), torch.no_grad():
        for trial in range(warmup + repeats):
            h = x[:1]
            for i, layer in enumerate(net.layers):
                start = time.perf_counter()
                h = layer(h)
                if trial >= warmup:
                    samples[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(s) for s in samples]


# ---- training and accuracy -----------------------------------------------------------------------

def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W) or (N,H,W,C) -> float (N,C,H,W) scaled to roughly [-2, 2]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.sub_(0.5).div_(0.25).contiguous()


def joint_exit_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor,
                    weights: Sequence[float] | None = None) -> torch.Tensor:
    """BranchyNet's joint objective: the weighted sum of every exit's cross-entropy."""
    weights = weights if weights is not None else [1.0] * len(logits)
    return sum(w * F.cross_entropy(z, labels) for w, z in zip(weights, logits))


def train_multi_exit(net: MultiExitNet, images: torch.Tensor, labels: torch.Tensor, epochs: int,
                     seed: int, batch_size: int = 64, lr: float = 2e-3, hflip: bool = False,
                     exit_weights: Sequence[float] | None = None) -> list[float]:
    """Train all exits jointly with Adam; returns the mean joint loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))
    epoch_losses = []
    net.train()
    for epoch in range(epochs):
        order, total = torch.randperm(len(labels), generator=generator), 0.0
        for start in range(0, len(labels), batch_size):
            idx = order[start:start + batch_size]
            x = _random_hflip(images[idx], generator) if hflip else images[idx]
            loss = joint_exit_loss(net(x), labels[idx], exit_weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        epoch_losses.append(total / len(labels))
        log.info("epoch %d/%d joint loss %.4f", epoch + 1, epochs, epoch_losses[-1])
    return epoch_losses


def _random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def exit_accuracy(net: MultiExitNet, images: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 500) -> list[float]:
    """Top-1 accuracy of every exit on (images, labels), each sample scored at every exit."""
    correct = torch.zeros(len(net.exits))
    net.eval()
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = net(images[start:start + batch_size])
            y = labels[start:start + batch_size]
            correct += torch.tensor([(z.argmax(1) == y).sum().item() for z in logits])
    return (correct / len(labels)).tolist()


# ---- one net's profile --------------------------------------------------------------------------

def profile_dnn(name: str, epochs: int, seed: int) -> dict:
    """Build, measure, train and score one net: its entry in the profile table."""
    builder, dataset, input_shape = DNNS[name]
    torch.manual_seed(seed)
    net = builder()
    sample = torch.randn(1, *input_shape)
    layer_flops, head_flops = count_flops(net, sample)
    out_bytes = layer_output_bytes(net, sample)
    cpu_ms = measure_layer_latency(net, sample)

    (train_x, train_y), (test_x, test_y) = (_load_split(dataset, s) for s in ("train", "test"))
    started = time.perf_counter()
    train_multi_exit(net, train_x, train_y, epochs, seed, hflip=HFLIP_AUGMENT[dataset])
    accuracy = exit_accuracy(net, test_x, test_y)
    log.info("%s trained in %.1fs, exit accuracies %s", name, time.perf_counter() - started,
             [round(a, 4) for a in accuracy])
    return {
        "dataset": dataset,
        "input_bytes": int(np.prod(input_shape)) * BYTES_PER_FLOAT32,
        "layers": [{"name": n, "flops": f, "out_bytes": b, "cpu_ms": round(ms, 4)}
                   for n, f, b, ms in zip(net.layer_names, layer_flops, out_bytes, cpu_ms)],
        "exits": [{"after_layer": a, "head_flops": f, "accuracy": round(acc, 4)}
                  for a, f, acc in zip(net.exit_after, head_flops, accuracy)],
        "train_samples": len(train_y), "test_samples": len(test_y),
    }


def _load_split(dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = LOADERS[dataset](split)
    return images_to_tensor(images), torch.from_numpy(labels)


def build_profile_table(names: Sequence[str], epochs: int, seed: int, command: str) -> dict:
    """The whole JSON document, in the schema `profiles.load_profiles` reads."""
    return {"generated_by": command, "torch": torch.__version__, "seed": seed, "epochs": epochs,
            "dnns": {name: profile_dnn(name, epochs, seed) for name in names}}


# ---- CLI ----------------------------------------------------------------------------------------

def _summary(table: dict) -> str:
    rows = [f"{'dnn':<16}{'layers':>7}{'MFLOPs':>9}  exits (after_layer: accuracy, head MFLOPs)"]
    for name, d in table["dnns"].items():
        total = sum(layer["flops"] for layer in d["layers"]) / 1e6
        exits = ", ".join(f"{e['after_layer']}: {e['accuracy']:.3f} ({e['head_flops'] / 1e6:.2f})"
                          for e in d["exits"])
        rows.append(f"{name:<16}{len(d['layers']):>7}{total:>9.2f}  {exits}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("profiles.json"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dnn", nargs="*", choices=sorted(DNNS), default=list(DNNS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    given = list(argv) if argv is not None else sys.argv[1:]
    command = " ".join(["python -m workloads.aeria.profiling", *given])
    started = time.perf_counter()
    table = build_profile_table(args.dnn, args.epochs, args.seed, command)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(_summary(table))
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
