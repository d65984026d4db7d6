"""Template workload: FedAvg vs FedProx on the MNIST subset, on the core's federated engine.

Copy this folder to start a workload: the README's "Add a workload" section walks through it.
"""
from orchestrator.claims import Claim, paired_difference
from orchestrator.workload import Workload
from workloads.fedprox.config import FedProxConfig
from workloads.fedprox.workload import run, trial, trial_metrics

CLAIMS = (Claim("FedProx's proximal term raises accuracy over FedAvg on heterogeneous devices",
                "+22 points of accuracy (Li et al. 2020, abstract; with 90% stragglers, "
                "not simulated here)", 0.22,
                paired_difference("accuracy", "fedprox", "fedavg")),)

WORKLOAD = Workload(name="fedprox", config_cls=FedProxConfig, run=run, trial=trial,
                    trial_metrics=trial_metrics, claims=CLAIMS, reference="fedprox",
                    description="template: FedAvg vs FedProx on MNIST over simulated devices")
