"""Workloads: one package per paper, each exposing a `WORKLOAD` (see orchestrator/workload.py).

A workload's algorithms are plain modules (numpy/torch) that know nothing of Ray or MLflow; only
its `workload.py` (run, trial) sees the core's context.
"""
