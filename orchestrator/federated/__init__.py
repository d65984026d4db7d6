"""The federated simulation engine every federated workload runs on (`ctx.federation`).

engine.py      Federation / Session: the round loop, services, per-round checkpoints and resume
strategy.py    the strategy protocol (FedAvg defaults), RoundPlan, participant sampling
population.py  device profiles and the data partition (size skew, Dirichlet label skew)
pool.py        K long-lived Ray actors multiplexing N simulated devices; in-actor pre-aggregation;
               DeviceTask (a round's instructions and services) and DeviceUpdate
comm.py        the ledger (bytes up/down/side from real tensor sizes) and the latency model
config.py      the population, pool and rounds sections a federated workload embeds
reference.py   a small FedAvg MLP program that benchmarks and tests the engine itself
"""
