"""The federated simulation engine shared by the federated workloads (deepfusion, prince).

population.py  device profiles and the data partition (size skew, Dirichlet label skew)
pool.py        K long-lived Ray actors multiplexing N simulated devices; in-actor pre-aggregation
comm.py        bytes up/down from real tensor sizes; simulated wall-clock per round
loop.py        the round loop with atomic per-round checkpoints and exact resume
config.py      FederationConfig, the section a federated workload embeds
reference.py   a small FedAvg MLP program that benchmarks and tests the engine itself
"""
