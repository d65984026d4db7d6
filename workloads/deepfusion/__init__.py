"""DeepFusion (arXiv 2602.14301): fuse heterogeneous on-device LLMs into one MoE by one-shot
federated knowledge distillation on the server.

Plain, Ray-free algorithm modules (the workload's orchestration imports them):
  config.py      every algorithm knob (DeepFusionConfig)
  data.py        the shipped medical / financial text, splits, causal-LM blocks
  models.py      on-device model zoo, dense MoE-base students, memory estimates
  clustering.py  Phase I: e_n, Pi (Eq. 6), KMeans within model types, proxy averaging (Fig. 4)
  vaa.py         Phase II: View-Aligned Attention (Eqs. 7-8, Fig. 5)
  distill.py     Phase II: L_KD = L_CE + alpha L_FM + beta L_KL (Eqs. 9-11), OFA-KD, FedMKT
  upcycle.py     Phase III: students -> MoE (Eqs. 12-13, Fig. 6), freeze experts
  baselines.py   FedJETS' compact MoE and merge, communication bytes
  metrics.py     token log-perplexity (Eq. 3) and token accuracy
Orchestration (Ray, MLflow, DeepSpeed; only these see the run context):
  programs.py    device programs on the federated pool, Phase II/III Ray tasks, the Ray Train loop
  pipeline.py    Phases 0-III and the baselines as functions of (config, setup, context), cached
  workload.py    run(cfg, ctx): one child run per method; trial(cfg, ctx): one sweep point
See README.md here for what is the paper's and what is ours.
"""
from orchestrator.workload import Workload
from workloads.deepfusion.config import DeepFusionConfig
from workloads.deepfusion.workload import resource_requests, run, trial, trial_metrics

WORKLOAD = Workload(
    name="deepfusion", config_cls=DeepFusionConfig, run=run, trial=trial,
    trial_metrics=trial_metrics, resource_requests=resource_requests,
    description="one-shot federated KD of heterogeneous on-device LLMs into an MoE (DeepFusion) "
                "vs centralized, FedJETS, FedMKT, OFA-KD and the no-VAA ablation")

__all__ = ["WORKLOAD"]
