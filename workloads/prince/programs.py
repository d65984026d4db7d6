"""The device side of every tenant, on the engine's pool (the edge server: `edge_server.py`).

* `SflDeviceProgram` (a `DeviceProgram` on the federated pool; many simulated devices per actor),
  told what to do by its instructions (`training.Probe` / `training.SflRound`):
  - `Probe`: G_n, the gradient norm of the device's loss at the broadcast model on one batch
    of its shard (the convergence bound's heterogeneity term, measured, not assumed);
  - `SflRound`: E local SplitFed steps; each step's smashed data goes to the tenant's
    `EdgeServer` (an engine service) and its gradient comes back. The device uploads its W^C
    delta with the aggregation weight the strategy chose (p_n/q_n unbiased, or p_n for FedAvg).
* `edge_server.EdgeServer` (one engine service per tenant, computing on Ray Train):
  SplitFed-V1's main server, one W^S copy per device in the round, aggregated with the same
  weights as the device side.

Models are rebuilt from (tenant, size, cut, pretrained, seed, LoRA rank/alpha) where they run, so
only weights and smashed data cross process boundaries; states and deltas hold the trainable
tensors only (under LoRA: the adapters and the head). Both sides compute on
their process's device (the GPU share Ray gave it, else the CPU) and exchange
CPU tensors only: smashed data, labels and gradients at the cut, states and deltas.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.federated.pool import DeviceTask, DeviceUpdate
from orchestrator.runtime import torch_device
from orchestrator.workload import derive_rng


@dataclass(frozen=True)
class TenantSpec:
    """How to rebuild tenant `name`'s split model and where its devices' data is."""

    name: str
    size: str
    cut_layer: int
    pretrained: Any
    seed: int
    train_limit: Any
    shards: tuple            # per device: sample indices into the tenant's train split
    batch_size: int
    local_steps: int
    lr: float
    optimizer: str
    lora_rank: int = 0       # > 0: LoRA adapters on both sides (tenants.add_lora), base frozen
    lora_alpha: Any = None   # None: 2 x lora_rank


@functools.lru_cache(maxsize=8)
def build_split(name: str, size: str, cut: int, pretrained: Any, seed: int, lora_rank: int = 0,
                lora_alpha: Any = None):
    """The tenant's split model; the same (seeded) base and adapters on every actor."""
    from workloads.prince.tenants import build_tenant

    return build_tenant(name, size, cut, pretrained, seed, lora_rank, lora_alpha)


@functools.lru_cache(maxsize=4)
def _train_data(name: str, limit: Any):
    from workloads.prince.data import load_tenant_data

    return load_tenant_data(name, "train", limit)


def split_of(spec: TenantSpec):
    return build_split(spec.name, spec.size, spec.cut_layer, spec.pretrained, spec.seed,
                       spec.lora_rank, spec.lora_alpha)


def _to(tensors: dict, device) -> dict:
    """The dict with every tensor on `device` (the same tensors where they already are)."""
    return {k: v.to(device) for k, v in tensors.items()}


class SflDeviceProgram:
    """The device side of every tenant, for whichever devices this actor hosts."""

    def __init__(self, specs: dict[str, TenantSpec]):
        import torch

        torch.set_num_threads(1)
        self.specs, self.device = specs, torch_device()

    def train(self, device: int, state: dict, task: DeviceTask) -> DeviceUpdate:
        from workloads.prince.training import Probe

        spec = self.specs[task.instructions.tenant]
        split, data = split_of(spec), _train_data(spec.name, spec.train_limit)
        for part in (split.full, split.device, split.server):
            part.to(self.device)  # in place (a no-op once this cached split is there)
        shard = np.asarray(spec.shards[device])
        rng = derive_rng(task.seed, task.round, device)
        if isinstance(task.instructions, Probe):
            return self._probe(split, data, shard, state, task.instructions.batch, rng)
        server = task.services[spec.name]
        return self._train(spec, split, data, shard, device, state, task.instructions.weight,
                           server, rng)

    def _probe(self, split, data, shard, state, probe_batch: int, rng) -> DeviceUpdate:
        """`state` = both sides' weights; nothing is uploaded, G_n comes back as a metric."""
        from workloads.prince.split import load_trainable

        load_trainable(split.device, state["device"])
        load_trainable(split.server, state["server"])
        split.full.zero_grad(set_to_none=True)
        batch = _to(data.batch(rng.choice(shard, size=min(probe_batch, len(shard)),
                                          replace=False)), self.device)
        extra = {k: batch[k] for k in split.server_keys}
        loss = split.server(split.device(**{k: batch[k] for k in split.input_keys}),
                            batch["labels"], **extra)
        loss.backward()
        norm = float(sum(float((p.grad ** 2).sum()) for p in split.full.parameters()
                         if p.grad is not None) ** 0.5)
        split.full.zero_grad(set_to_none=True)
        return DeviceUpdate({}, 0.0, len(shard), 0.0, {"grad_norm": norm, "loss": float(loss)})

    def _train(self, spec, split, data, shard, device, state, weight, server, rng) -> DeviceUpdate:
        """`state` = the device side's weights; steps go through the tenant's edge `server`."""
        import ray

        from workloads.prince.data import batches
        from workloads.prince.split import device_local_training

        steps, on = iter(range(1 << 30)), self.device

        def server_step(smashed, labels, mask):
            first = next(steps) == 0  # a retried device (its actor died) starts its copy over
            loss, grad = ray.get(server.step.remote(device, smashed.cpu(), labels.cpu(),
                                                    None if mask is None else mask.cpu(), first))
            return loss, grad.to(on)

        local = [_to(b, on) for b in batches(data, shard, spec.batch_size, rng)]
        delta, m = device_local_training(split, _to(state, on), local, server_step,
                                         spec.local_steps, spec.lr, spec.optimizer)
        delta = {k: v.cpu() for k, v in delta.items()}
        side = int(m["smashed_bytes_up"] + m["label_bytes_up"] + m["grad_bytes_down"])
        return DeviceUpdate(delta, float(weight), m["samples"], 0.0, {"loss": m["loss"]},
                            bytes_side=side)


def make_device_program(specs: dict[str, TenantSpec]) -> SflDeviceProgram:
    return SflDeviceProgram(specs)
