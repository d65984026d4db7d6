"""Helpers shared by several workloads (data loaders that know no workload)."""
