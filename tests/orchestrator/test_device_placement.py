"""GPU placement: a task or actor computes on the GPU (share) Ray gave it, and on the CPU otherwise;
whatever a device program returns is on the CPU, so aggregation and pickling never see a device.

`torch_device()` is exercised for real: in a fresh interpreter without Ray, in the driver and in a
Ray task of the local (CPU) Ray; only Ray's GPU assignment and CUDA's availability are faked to
reach the branch a GPU-less machine cannot. The GPU case itself runs where a GPU exists.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from orchestrator.runtime import torch_device
from tests.conftest import REPO

CPU = torch.device("cpu")


def _tensors(tree):
    """Every tensor in a nest of dicts / lists / tuples."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _tensors(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _tensors(v)


def phase0_training(seed: int = 7):
    """A callable giving (where it computed, device 0's Phase 0 DeepFusion update: tiny GPT-2 on a
    few real sentences). Local, so Ray pickles it by value and workers need no tests/ path. It
    runs on one CPU thread, as a 1-CPU Ray worker does (the thread count changes float sums)."""

    def train():
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _train()
        finally:
            torch.set_num_threads(threads)

    def _train():
        from orchestrator.federated.pool import DeviceTask
        from orchestrator.runtime import torch_device
        from workloads.deepfusion.data import load_case
        from workloads.deepfusion.models import build_device_model
        from workloads.deepfusion.programs import LocalSpec, cpu_state, make_local_program

        texts = [r.text for r in load_case("financial")[:40]]
        spec = LocalSpec(models=["gpt2"], texts=[texts], size="tiny", seq_len=32, batch_size=4,
                         optimizer="adam", lr=1e-3, steps=2, embedding="random_projection",
                         embedding_dim=16, encoder_seed=0, dtype_bytes=4,
                         releases={"gpt2": cpu_state(build_device_model("gpt2", "tiny"))})
        return str(torch_device()), make_local_program(spec).train(0, {}, DeviceTask(0, seed))

    return train


# --------------------------------------------------------------------------- torch_device
def test_torch_device_is_the_cpu_in_a_process_without_ray():
    code = ("import ray; from orchestrator.runtime import torch_device; "
            "assert not ray.is_initialized(); print(torch_device())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cpu"


@pytest.mark.usefixtures("local_ray")
def test_torch_device_is_the_cpu_in_the_driver_and_in_a_ray_task_without_gpus():
    import ray

    assert torch_device() == CPU, "the driver is never handed a GPU share"
    where, gpus = ray.get(ray.remote(num_cpus=0)(lambda: (torch_device(), ray.get_gpu_ids()))
                          .remote())
    assert gpus == [] and where == CPU


@pytest.mark.usefixtures("local_ray")
def test_a_gpu_share_without_working_cuda_still_computes_on_the_cpu(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device() == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device() == torch.device("cuda"), "a GPU share with CUDA is the worker's cuda"


# --------------------------------------------------------------------------- device programs
@pytest.mark.usefixtures("local_ray")
def test_a_device_program_in_a_cpu_ray_task_returns_cpu_tensors_equal_to_the_drivers():
    import ray

    where, update = ray.get(ray.remote(num_cpus=1)(phase0_training()).remote())
    here_where, here = phase0_training()()
    assert where == here_where == "cpu"
    tensors = list(_tensors(update.update))
    assert tensors and all(t.device == CPU and not t.requires_grad for t in tensors)
    assert update.update["model"].keys() == here.update["model"].keys()
    assert all(torch.equal(update.update["model"][k], here.update["model"][k])
               for k in here.update["model"]), "same seeds, same CPU numbers, wherever it runs"
    assert torch.equal(update.update["embedding"], here.update["embedding"])
    assert update.metrics == here.metrics


@pytest.mark.usefixtures("local_ray")
def test_a_device_program_on_a_gpu_share_computes_there_and_returns_cpu_tensors():
    import ray

    if not torch.cuda.is_available() or ray.cluster_resources().get("GPU", 0) < 0.5:
        pytest.skip("needs a GPU visible to the local Ray")
    where, update = ray.get(ray.remote(num_cpus=1, num_gpus=0.5)(phase0_training()).remote())
    assert where == "cuda"
    tensors = list(_tensors(update.update))
    assert tensors and all(t.device == CPU for t in tensors)
    assert torch.isfinite(torch.tensor(update.metrics["loss"]))
