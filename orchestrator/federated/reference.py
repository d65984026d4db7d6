"""A minimal FedAvg device program: a small MLP on synthetic classification data.

Not a workload: it exists so the benchmark and the tests can measure and check the engine
itself (pool, aggregation, accounting, resume) with work the size of a real small client.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.federated.pool import DeviceTask, DeviceUpdate


@dataclass(frozen=True)
class MlpTask:
    num_devices: int
    samples_per_device: int = 256
    features: int = 32
    hidden: int = 64
    classes: int = 10
    local_steps: int = 4
    batch: int = 64
    lr: float = 0.1
    data_seed: int = 0


def make_mlp(task: MlpTask):
    import torch

    torch.manual_seed(task.data_seed)
    return torch.nn.Sequential(torch.nn.Linear(task.features, task.hidden), torch.nn.ReLU(),
                               torch.nn.Linear(task.hidden, task.classes))


def initial_state(task: MlpTask) -> dict:
    return {k: v.detach().clone() for k, v in make_mlp(task).state_dict().items()}


def device_data(task: MlpTask, device: int) -> tuple[np.ndarray, np.ndarray]:
    """Each device's samples: a shared linear rule plus a device-specific shift (non-iid)."""
    rng = np.random.default_rng([task.data_seed, device])
    w = np.random.default_rng(task.data_seed).normal(size=(task.features, task.classes))
    x = rng.normal(size=(task.samples_per_device, task.features)) + rng.normal(0, 0.5, task.features)
    return x.astype(np.float32), (x @ w).argmax(1)


class MlpProgram:
    """Local SGD on the device's data from the global weights; returns the trained weights."""

    def __init__(self, task: MlpTask):
        self.task, self.model = task, make_mlp(task)
        self.params = sum(p.numel() for p in self.model.parameters())

    def train(self, device: int, global_state: dict, task: DeviceTask) -> DeviceUpdate:
        import torch

        t = self.task
        self.model.load_state_dict(global_state)
        x, y = device_data(t, device)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(hash((task.seed, task.round, device)) % 2**31)
        opt = torch.optim.SGD(self.model.parameters(), lr=t.lr)
        loss = torch.tensor(0.0)
        for _ in range(t.local_steps):
            idx = torch.randint(0, len(x), (t.batch,), generator=gen)
            loss = torch.nn.functional.cross_entropy(self.model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        flops = 6.0 * self.params * t.batch * t.local_steps
        return DeviceUpdate(state, float(len(x)), len(x), flops, {"loss": float(loss.detach())})


def make_program(task: MlpTask) -> MlpProgram:
    return MlpProgram(task)
