"""SplitFed-V1 training (Thapa et al., AAAI 2022; SEEDS 2.2), for any tenant `SplitModel`.

Per local step the device runs W^C to the cut and sends the smashed activations with the labels;
the main server runs W^S forward and backward, updates W^S and sends back dL/d(smashed); the
device back-propagates it through W^C and updates W^C. V1 keeps one W^S copy per device, trained
in parallel, so each device's server delta is as separable as its device delta: the aggregator can
apply `w + sum_n 1_n p_n/q_n delta_n` (unbiased, Luo et al. ICDCS'23) to both sides alike.

Everything that crosses the device/server boundary is a plain CPU tensor or float (picklable): in
production `server_step` is a Ray actor method call, in tests a local `ServerSide.step`.
States and deltas cover the *trainable* parameters only (`requires_grad`), keyed by parameter name,
so freezing a base model under LoRA adapters shrinks them to the adapters automatically.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from workloads.common.optim import make_optimizer
from workloads.prince.tenants import NUM_CLASSES, SEQ_LEN, SplitModel

Batch = dict[str, torch.Tensor]  # input keys of the tenant + "labels"
# server_step(smashed, labels, attention_mask_or_None) -> (loss, gradient at the cut)
ServerStep = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"],
                      "tuple[float, torch.Tensor]"]


# --------------------------------------------------------------------------- states and deltas
def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the module's trainable parameters, by name."""
    return {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}


def load_trainable(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Write `state` into the module's parameters of the same names (in place)."""
    params = dict(module.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def state_delta(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> dict:
    """after - before, key by key (what a device uploads)."""
    return {k: after[k] - before[k] for k in before}


def apply_delta(state: dict[str, torch.Tensor], delta: dict[str, torch.Tensor],
                scale: float = 1.0) -> dict[str, torch.Tensor]:
    """state + scale * delta (a new dict; keys missing from `delta` are kept unchanged)."""
    return {k: v + scale * delta[k] if k in delta else v.clone() for k, v in state.items()}


# --------------------------------------------------------------------------- device side
def device_forward(split: SplitModel, batch: Batch) -> torch.Tensor:
    """W^C forward: the smashed data at the cut, still attached to the device's graph."""
    return split.device(**{k: batch[k] for k in split.input_keys})


def device_local_training(split: SplitModel, device_state: dict[str, torch.Tensor],
                          batches: Iterable[Batch], server_step: ServerStep, steps: int,
                          lr: float, optimizer: str = "sgd") -> tuple[dict, dict]:
    """One device's E local SplitFed steps from the round's W^C (`device_state`).

    `batches` is cycled until `steps` steps are done; `optimizer` is 'sgd' | 'sgd_momentum' |
    'adam' | 'adamw' (fresh each round, like the server's). Returns (delta of W^C, metrics) where
    metrics holds the mean and per-step losses, samples seen and the bytes that crossed the
    link: smashed data and labels up, gradients at the cut down.
    """
    load_trainable(split.device, device_state)
    split.device.train()
    opt = make_optimizer(split.device.parameters(), optimizer, lr)
    losses, samples, up, labels_up, down = [], 0, 0, 0, 0
    for batch in itertools.islice(itertools.cycle(list(batches)), steps):
        opt.zero_grad(set_to_none=True)
        smashed = device_forward(split, batch)
        mask = batch.get("attention_mask") if "attention_mask" in split.server_keys else None
        loss, grad = server_step(smashed.detach(), batch["labels"], mask)
        smashed.backward(grad)
        opt.step()
        losses.append(float(loss))
        samples += len(batch["labels"])
        up += smashed.nbytes
        labels_up += batch["labels"].nbytes + (mask.nbytes if mask is not None else 0)
        down += grad.nbytes
    delta = state_delta(trainable_state(split.device), device_state)
    metrics = {"loss": sum(losses) / max(len(losses), 1), "losses": losses, "steps": len(losses),
               "samples": samples, "smashed_bytes_up": up, "label_bytes_up": labels_up,
               "grad_bytes_down": down}
    return delta, metrics


@torch.no_grad()
def evaluate(split: SplitModel, batches: Iterable[Batch]) -> dict[str, float]:
    """Mean loss and accuracy of W^C + W^S per scored target (sample; LLaMA: answer token)."""
    split.device.eval(), split.server.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        extra = {k: batch[k] for k in split.server_keys}
        logits, targets = split.server.scored_logits(device_forward(split, batch),
                                                     batch["labels"], **extra)
        loss_sum += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
        count += len(targets)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
            "targets": count}

# --------------------------------------------------------------------------- profiling
def example_batch(split: SplitModel, batch_size: int = 2, seed: int = 0) -> Batch:
    """Random inputs and labels with the shapes `data.load_tenant_data` produces."""
    g = torch.Generator().manual_seed(seed)
    cfg, n = split.full.config, batch_size
    if split.name == "vit":
        x = {"pixel_values": torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=g)}
    elif split.name == "whisper":
        frames = 2 * cfg.max_source_positions
        x = {"input_features": torch.randn(n, cfg.num_mel_bins, frames, generator=g)}
    else:
        ids = torch.randint(3, cfg.vocab_size, (n, SEQ_LEN[split.name]), generator=g)
        x = {"input_ids": ids}
        if split.name == "bert":
            x["attention_mask"] = torch.ones_like(ids)
    y = (x["input_ids"].clone() if split.name == "llama"
         else torch.randint(0, NUM_CLASSES[split.name], (n,), generator=g))
    return {**x, "labels": y}


@dataclass(frozen=True)
class SplitProfile:
    """Per-sample cost of one training step of a split (FLOPs counted by FlopCounterMode:
    matmuls, convolutions and attention; forward + backward unless named `_fwd`)."""

    device_params: int
    server_params: int
    device_flops: float
    server_flops: float
    device_fwd_flops: float
    server_fwd_flops: float
    smashed_bytes: int  # activations at the cut, up; the gradient coming down is as large
    label_bytes: int    # labels (and BERT's attention mask) sent up with them


def _count(fn) -> tuple[Any, int]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, counter.get_total_flops()


def profile_split(split: SplitModel, batch: dict[str, torch.Tensor] | None = None) -> SplitProfile:
    """Measure a split on `batch` (default: `example_batch`) and divide by its size. Runs with
    eager attention, whose matmuls the counter sees (CPU SDPA kernels are not counted)."""
    batch = batch if batch is not None else example_batch(split)
    attn = split.full.config._attn_implementation
    split.full.set_attn_implementation("eager")
    n = len(batch["labels"])
    smashed, dev_fwd = _count(lambda: device_forward(split, batch))
    cut = smashed.detach().requires_grad_()
    extra = {k: batch[k] for k in split.server_keys}
    loss, srv_fwd = _count(lambda: split.server(cut, batch["labels"], **extra))
    _, srv_bwd = _count(loss.backward)
    _, dev_bwd = _count(lambda: smashed.backward(cut.grad))
    split.full.zero_grad(set_to_none=True)
    split.full.set_attn_implementation(attn)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return SplitProfile(
        params(split.device), params(split.server), (dev_fwd + dev_bwd) / n,
        (srv_fwd + srv_bwd) / n, dev_fwd / n, srv_fwd / n, cut.nbytes // n,
        sum(batch[k].nbytes for k in ("labels", *split.server_keys)) // n)


# --------------------------------------------------------------------------- server side
class ServerSide:
    """The main server of one tenant under SplitFed-V1: W^S as of the round's start, and one
    copy of it per device that steps this round, each with its own optimizer."""

    def __init__(self, server: nn.Module, lr: float, optimizer: str = "sgd"):
        self.template = copy.deepcopy(server)
        self.lr, self.optimizer = lr, optimizer
        self.start = trainable_state(self.template)
        self.copies: dict[int, tuple[nn.Module, torch.optim.Optimizer]] = {}

    def begin_round(self, server_state: dict[str, torch.Tensor] | None = None) -> None:
        """Set W^S for the new round (None keeps the current one) and drop last round's copies."""
        if server_state is not None:
            self.start = {k: v.detach().clone() for k, v in server_state.items()}
            load_trainable(self.template, self.start)
        self.copies = {}

    def state(self) -> dict[str, torch.Tensor]:
        """W^S at the start of the round."""
        return {k: v.clone() for k, v in self.start.items()}

    def _copy(self, device_id: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        if device_id not in self.copies:
            model = copy.deepcopy(self.template).train()
            self.copies[device_id] = (model, make_optimizer(model.parameters(), self.optimizer,
                                                            self.lr))
        return self.copies[device_id]

    def step(self, device_id: int, smashed: torch.Tensor, labels: torch.Tensor,
             attention_mask: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """Forward + backward of device `device_id`'s W^S copy on its smashed data; one optimizer
        step; returns (loss, dL/d smashed) with the gradient taken before the update."""
        model, opt = self._copy(device_id)
        cut = smashed.detach().requires_grad_()
        opt.zero_grad(set_to_none=True)
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        loss = model(cut, labels, **extra)
        loss.backward()
        opt.step()
        return float(loss.detach()), cut.grad.detach()

    def delta(self, device_id: int) -> dict[str, torch.Tensor]:
        """Device `device_id`'s W^S copy minus the round's W^S (zeros if it never stepped)."""
        if device_id not in self.copies:
            return {k: torch.zeros_like(v) for k, v in self.start.items()}
        return state_delta(trainable_state(self.copies[device_id][0]), self.start)

    def pop_delta(self, device_id: int) -> dict[str, torch.Tensor]:
        """`delta(device_id)`, then free that device's copy."""
        out = self.delta(device_id)
        self.copies.pop(device_id, None)
        return out

    def aggregate(self, weights: dict[int, float], normalize: bool) -> dict[str, torch.Tensor]:
        """W^S + sum_n w_n delta_n (divided by sum_n w_n when `normalize`: plain FedAvg); each
        device's copy is freed as it is summed."""
        total = sum(weights.values())
        scale = 1.0 / total if normalize and total > 0 else 1.0
        out = self.state()
        for device_id, w in sorted(weights.items()):
            for k, d in self.pop_delta(device_id).items():
                out[k] += scale * w * d
        return out
