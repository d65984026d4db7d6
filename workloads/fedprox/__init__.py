"""The template workload: FedAvg vs FedProx on MNIST digits split over simulated devices.

Copy this folder to start a workload: the README's "Add a workload" section walks through it.
"""
from orchestrator.workload import Workload
from workloads.fedprox.config import FedProxConfig
from workloads.fedprox.workload import run, trial, trial_metrics

WORKLOAD = Workload(name="fedprox", config_cls=FedProxConfig, run=run, trial=trial,
                    trial_metrics=trial_metrics,
                    description="template: FedAvg vs FedProx on MNIST over simulated devices")
