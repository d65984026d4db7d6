"""PRINCE (arXiv 2503.04971): multi-tenant split federated fine-tuning of foundation models with
price incentives. Only the abstract is public; SEEDS.md section 2 and README.md here mark what is
the paper's, what the standard methods it builds on, and what is ours.

Plain, Ray-free algorithm modules:
  market.py       tenants and devices as arrays
  game.py         the devices' congestion game (better response, Rosenthal potential)
  stackelberg.py  tenants' prices as Stackelberg leaders
  valuation.py    the convergence bound R_m(q) that values devices
  timing.py       per-round wall-clock: device compute, smashed-data transfer, congested edge
  baselines.py    the pricing / assignment baselines
  tenants.py      ViT / BERT / Whisper / LLaMA split at a cut layer
  tenant_specs.py the tenants as plain data (names, sizes, shapes), importable without torch
  split.py        SplitFed-V1: device forward, server step, gradient at the cut
  data.py         the tenants' shipped data
Orchestration (Ray, MLflow; only these see the run context):
  programs.py     the device side on the federated pool, one EdgeServer actor per tenant
  pipeline.py     draw the market, profile the splits, probe G_n, price every method
  training.py     SFL rounds with bias-resilient (p/q) or plain FedAvg aggregation
  workload.py     run: one child run per method; trial: the game alone, for Tune sweeps
"""
from orchestrator.workload import Workload
from workloads.prince.config import PrinceConfig
from workloads.prince.workload import resource_requests, run, trial, trial_metrics

WORKLOAD = Workload(
    name="prince", config_cls=PrinceConfig, run=run, trial=trial, trial_metrics=trial_metrics,
    resource_requests=resource_requests, reference="prince",
    description="multi-tenant split federated fine-tuning (ViT, BERT, Whisper, LLaMA) with "
                "Stackelberg pricing (PRINCE) vs uniform, independent, random, biased, full")

__all__ = ["WORKLOAD"]
