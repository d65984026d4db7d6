"""Does a cluster config fit a paper experiment? Demands read from the typed experiment config,
placed by Ray's own autoscaler code.

`paper_stages(cfg)` lists, stage by stage, the Ray resource bundles a shipped paper experiment holds
at the same time (where each comes from is cited per workload below). `launch_plan` replays the
stages through `ray.autoscaler._private.resource_demand_scheduler`: bundles first pack onto nodes
already up, the rest go to `get_nodes_for` with Ray's default utilization scorer, the function the
autoscaler itself uses to pick node types. The autoscaler counts GPUs as one number per node, while
Ray hands fractional GPUs out per device (a 0.75-GPU actor takes one GPU, which then has 0.25
left), so `fits_per_gpu` checks the plan with whole devices as well.
"""
from __future__ import annotations

import collections
import functools
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"

# The shipped paper experiments (deepfusion has one per case) and the GPUs per node of the node
# type each should land on (0: a CPU-only node).
PAPER = {"aeria/paper.yaml": 0, "robustness/paper.yaml": 0, "prince/paper.yaml": 4,
         "deepfusion/medical.yaml": 8, "deepfusion/financial.yaml": 8}

Bundle = dict[str, float]


def bundle(cpus: float, gpus: float = 0.0) -> Bundle:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def load_paper(rel: str) -> Any:
    from orchestrator.config import load_experiment

    return load_experiment(EXPERIMENTS / rel)


def paper_stages(cfg: Any) -> list[list[Bundle]]:
    """The experiment's resource bundles alive together, per stage; a sweep adds its trial."""
    trial = [bundle(cfg.sweep.cpus_per_trial, cfg.sweep.gpus_per_trial)] if cfg.sweep.params else []
    return [stage + trial for stage in STAGES[cfg.workload](cfg)]


def _aeria(cfg: Any) -> list[list[Bundle]]:
    # one 1-CPU Ray task per market (orchestrator/runtime.parallel_map); the paper sizes its Ray
    # at ray.num_cpus of them running at once
    return [[bundle(1)] * cfg.ray.num_cpus]


def _robustness(cfg: Any) -> list[list[Bundle]]:
    # workloads/robustness/evaluate.Pool: every model's workers (actors) exist together
    return [[bundle(m.cpus, m.num_gpus) for m in cfg.robustness.models
             for _ in range(m.n_workers)]]


def _prince(cfg: Any) -> list[list[Bundle]]:
    # workloads/prince/workload.run: the device pool and one edge server per tenant, together
    fed, t = cfg.prince.federation, cfg.prince.training
    assert fed.num_actors > 0, "a paper config pins federation.num_actors"
    return [[bundle(fed.cpus_per_actor, fed.gpus_per_actor)] * fed.num_actors
            + [bundle(t.server_cpus, t.server_gpus)] * len(cfg.prince.tenants.enabled())]


def _deepfusion(cfg: Any) -> list[list[Bundle]]:
    # workloads/deepfusion/pipeline: Phase 0's device pool is shut down before Phase III's
    # Ray Train workers (orchestrator/train.run_distributed) start
    fed, run = cfg.deepfusion.federation, cfg.deepfusion.run
    assert fed.num_actors > 0, "a paper config pins federation.num_actors"
    return [[bundle(fed.cpus_per_actor, fed.gpus_per_actor)] * fed.num_actors,
            [bundle(run.ep_cpus_per_worker, 1.0 if run.use_gpu else 0.0)] * run.ep_workers]


STAGES = {"aeria": _aeria, "robustness": _robustness, "prince": _prince,
          "deepfusion": _deepfusion}


def _scorer():
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilitySummary)
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer

    return functools.partial(_default_utilization_scorer,
                             node_availability_summary=NodeAvailabilitySummary({}))


def launch_plan(node_types: dict, head_type: str, max_workers: int,
                stages: list[list[Bundle]]) -> tuple[collections.Counter, list[Bundle]]:
    """The worker nodes Ray's autoscaler launches for the stages in turn (a stage's nodes stay up
    for the next), and the bundles it could place nowhere (empty when the cluster fits)."""
    from ray.autoscaler._private.resource_demand_scheduler import (get_bin_pack_residual,
                                                                   get_nodes_for)

    launched: collections.Counter = collections.Counter()
    for stage in stages:
        up = [node_types[t]["resources"] for t in [head_type, *launched.elements()]]
        residual, _ = get_bin_pack_residual(up, stage)
        added, residual = get_nodes_for(node_types, {head_type: 1, **launched}, head_type,
                                        max_workers - sum(launched.values()), residual,
                                        _scorer())
        launched.update(added)
        if residual:
            return launched, residual
    return launched, []


def fits_per_gpu(nodes: list[Bundle], stage: list[Bundle]) -> bool:
    """Whether the stage fits the nodes when each GPU is a device of capacity 1 that a fractional
    request cannot span (how Ray assigns GPU ids), first fit, largest GPU share first."""
    free = [{"CPU": n.get("CPU", 0), "gpus": [1.0] * int(n.get("GPU", 0))} for n in nodes]
    for b in sorted(stage, key=lambda b: (b.get("GPU", 0), b["CPU"]), reverse=True):
        if not any(_take(node, b) for node in free):
            return False
    return True


def _take(node: dict, b: Bundle) -> bool:
    gpu = b.get("GPU", 0.0)
    if node["CPU"] < b["CPU"]:
        return False
    if gpu >= 1:
        whole = [i for i, f in enumerate(node["gpus"]) if f >= 1.0][:int(gpu)]
        if len(whole) < gpu:
            return False
        for i in whole:
            node["gpus"][i] = 0.0
    elif gpu > 0:
        slot = next((i for i, f in enumerate(node["gpus"]) if f >= gpu - 1e-9), None)
        if slot is None:
            return False
        node["gpus"][slot] -= gpu
    node["CPU"] -= b["CPU"]
    return True
