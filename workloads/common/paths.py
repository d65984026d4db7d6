"""Where the repo's shipped data lives: one root, `data/` beside `workloads/`.

Each workload reads its own subfolders (`data/prince`, `data/robustness`, `data/medical`, ...) and
the shared ones (`data/cifar10`, `data/mnist`); each folder's PROVENANCE.md says where it came
from. Paths resolve against the repository, not the working directory, so tests and CLIs work
from anywhere. The core never reads data, so this lives with the workloads, not in `orchestrator`.
"""
from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parents[2] / "data"
