"""Pretrain the ViT tenant once, on data disjoint from its fine-tuning task, and ship the result.

No package ships ViT weights offline (`data/README.md`), so the ViT tenant would be the only one
trained from scratch. This command gives it what the others have, a backbone pretrained on
another task: supervised MNIST digit classification (8,000 digits of the repo's MNIST split,
padded 28 -> 32 px, grey copied to 3 channels, normalised like the CIFAR inputs). The tenant then
fine-tunes on CIFAR-10, whose images and classes share nothing with MNIST; its classifier head is
re-initialised at load (`ignore_mismatched_sizes` keeps only the backbone). [OURS]

    python -m workloads.prince.pretrain_vit --size tiny     # ~2 min on 2 CPUs
    python -m workloads.prince.pretrain_vit --size small    # ~7 min

writes `workloads/prince/pretrained/vit-<size>/` (config.json, model.safetensors in float16 to keep
the repo small, PROVENANCE.md with the held-out MNIST accuracy). `pretrained: auto` on the ViT
tenant loads the folder of its `size`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from workloads.prince.tenant_specs import vit_dir

EPOCHS = {"tiny": 10, "small": 4}
BATCH = 64
LR = 1e-3
SEED = 0


def mnist_as_cifar(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits shaped like the ViT tenant's inputs: (N, 3, 32, 32), CIFAR-normalised."""
    from workloads.common.images import load_mnist
    from workloads.prince.data import CIFAR_MEAN, CIFAR_STD

    images, labels = load_mnist(split)
    x = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2)))).float().div(255.0)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    x = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return x.contiguous(), torch.from_numpy(labels)


def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(pixel_values=x[i:i + 256]).logits.argmax(-1)
                          for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def pretrain(size: str, epochs: int, log=print) -> tuple[torch.nn.Module, float]:
    """The ViT of `size` trained on MNIST-train; returns it with its MNIST-test accuracy."""
    from workloads.prince.tenants import build_full_model

    torch.manual_seed(SEED)
    model = build_full_model("vit", size, seed=SEED)
    x, y = mnist_as_cifar("train")
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    steps = epochs * (len(x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
    rng = np.random.default_rng(SEED)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(len(x) // BATCH):
            idx = order[i * BATCH:(i + 1) * BATCH]
            loss = F.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}")
    return model, accuracy(model, *mnist_as_cifar("test"))


def save(model, size: str, acc: float, epochs: int, seconds: float, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # without the MNIST head: loading for CIFAR then starts the classifier random
    backbone = {k: v for k, v in model.to(torch.float16).state_dict().items()
                if not k.startswith("classifier.")}
    model.save_pretrained(out, state_dict=backbone, safe_serialization=True)
    (out / "PROVENANCE.md").write_text(
        f"# ViT-{size} pretrained on MNIST (the PRINCE ViT tenant's backbone)\n\n"
        f"Made by `python -m workloads.prince.pretrain_vit --size {size}` (seed {SEED}, "
        f"{epochs} epochs, AdamW lr {LR} one-cycle, batch {BATCH}; {seconds:.0f} s on the "
        "machine that made it).\n\n"
        "- Data: the repo's MNIST split (`data/mnist`, 8,000 train digits of the official 10k "
        "test set; LeCun, Cortes and Burges, CC BY-SA 3.0), padded to 32x32, grey to RGB, "
        "CIFAR-normalised. Disjoint from the tenant's fine-tuning task (CIFAR-10).\n"
        f"- Held-out accuracy: {acc:.4f} on the 2,000 MNIST test digits.\n"
        "- Weights: float16 safetensors (loaded as float32); the 10-class MNIST head is dropped "
        "at load, the CIFAR head starts random.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the shipped workloads/prince/pretrained/"
                             "vit-<size>)")
    args = parser.parse_args(argv)
    epochs = args.epochs or EPOCHS[args.size]
    start = time.perf_counter()
    model, acc = pretrain(args.size, epochs)
    out = args.out or vit_dir(args.size, must_exist=False)
    save(model, args.size, acc, epochs, time.perf_counter() - start, out)
    print(f"MNIST test accuracy {acc:.4f}; wrote {out}")


if __name__ == "__main__":
    main()
