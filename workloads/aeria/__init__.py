"""AERIA: auction-based pricing of on-demand multi-exit DNN inference in an edge-AI market.

See README.md here for what comes from the paper's abstract, the literature and our choices.
"""
from orchestrator.workload import Workload
from workloads.aeria.config import AeriaConfig
from workloads.aeria.workload import resource_requests, run, trial, trial_batch, trial_metrics

WORKLOAD = Workload(
    name="aeria", config_cls=AeriaConfig, run=run, trial=trial, trial_batch=trial_batch,
    trial_metrics=trial_metrics, resource_requests=resource_requests, reference="aeria",
    description="edge-inference market: AERIA (consensus estimate + cost sharing) vs baselines")

__all__ = ["WORKLOAD"]
