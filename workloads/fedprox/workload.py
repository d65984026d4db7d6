"""FedAvg vs FedProx (Li et al., MLSys 2020) on the engine: a strategy, a device program, `run`."""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

from orchestrator.federated.pool import DeviceTask, DeviceUpdate
from orchestrator.federated.strategy import Strategy


@dataclass(frozen=True)
class Proximal:
    mu: float  # the instruction FedProx adds to FedAvg's round; mu = 0 is FedAvg


class FedProx(Strategy):
    def __init__(self, participation: float, mu: float, evaluate: Any):
        super().__init__(participation)
        self.mu, self.evaluate = mu, lambda r, state: evaluate(state)

    def instructions(self, round_idx: int, state: dict) -> Proximal:
        return Proximal(self.mu)


def model(c, seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, c.hidden),
                               torch.nn.ReLU(), torch.nn.Linear(c.hidden, 10))


def digits(split: str, limit: int = 8000):
    import torch
    from workloads.common.images import load_mnist

    x, y = load_mnist(split)
    return torch.from_numpy(x[:limit]).float() / 255, torch.from_numpy(y[:limit])


def accuracy(c, test, state: dict) -> dict[str, float]:
    net = model(c, 0)
    net.load_state_dict(state)
    return {"accuracy": float((net(test[0]).argmax(1) == test[1]).float().mean())}


class Device:
    """Local SGD on one device's digits, minimising loss + mu/2 ||w - w_global||^2 (Eq. 2)."""

    def __init__(self, c, shards):
        self.c, self.shards, self.net = c, shards, model(c, 0)
        self.x, self.y = digits("train", c.train_digits)

    def train(self, device: int, state: dict, task: DeviceTask) -> DeviceUpdate:
        import torch

        c, idx = self.c, torch.as_tensor(self.shards[device])
        self.net.load_state_dict(state)
        anchor = [p.detach().clone() for p in self.net.parameters()]
        opt = torch.optim.SGD(self.net.parameters(), lr=c.lr)
        gen = torch.Generator().manual_seed(task.seed * 100_003 + task.round * 1_009 + device)
        for _ in range(c.local_steps):
            b = idx[torch.randint(len(idx), (c.batch_size,), generator=gen)]
            loss = torch.nn.functional.cross_entropy(self.net(self.x[b]), self.y[b])
            prox = sum(((p - a) ** 2).sum() for p, a in zip(self.net.parameters(), anchor))
            opt.zero_grad()
            (loss + task.instructions.mu / 2 * prox).backward()
            opt.step()
        flops = 6.0 * 784 * c.hidden * c.batch_size * c.local_steps
        return DeviceUpdate({k: v.detach().clone() for k, v in self.net.state_dict().items()},
                            float(len(idx)), len(idx), flops, {"loss": float(loss)})


def train_methods(cfg: Any, ctx: Any, child=lambda m: contextlib.nullcontext()) -> dict:
    """Every method from the same initial weights, devices and data: {method: FederatedRun},
    each inside `child(method)` (an MLflow child run that gets the per-round metrics)."""
    from orchestrator.federated.population import partition, sample_population

    c, fed, out = cfg.fedprox, cfg.fedprox.federation, {}
    shards = partition(digits("train", c.train_digits)[1].numpy(), fed.num_devices,
                       fed.size_skew, fed.label_alpha, ctx.rng(1))
    evaluate, init = functools.partial(accuracy, c, digits("test")), model(c, ctx.seed).state_dict()
    program = functools.partial(Device, c, shards)
    with ctx.federation.session(fed, program, sample_population(fed, ctx.rng(0))) as fl:
        for m in c.methods:
            with child(m) as run:
                out[m] = fl.run(m, FedProx(fed.participation, c.mu * (m == "fedprox"), evaluate),
                                init, fed.rounds, key=(c,),
                                on_round=lambda r, e: run and run.log_metrics(e, step=r))
    return out


def run(cfg: Any, ctx: Any) -> list[dict]:
    runs = train_methods(cfg, ctx, ctx.tracker.child)
    return [{"method": m, "rounds": len(fr.history), **{k: fr.history[-1][k] for k in
             ("accuracy", "cum_bytes", "cum_sim_seconds")}} for m, fr in runs.items()]


def trial_metrics(cfg: Any) -> list[str]:
    return [f"accuracy_{m}" for m in cfg.fedprox.methods]


def trial(cfg: Any, ctx: Any) -> dict[str, float]:
    return {f"accuracy_{m}": fr.history[-1]["accuracy"] for m, fr in train_methods(cfg, ctx).items()}
