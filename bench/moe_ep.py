"""Benchmark expert-parallel MoE tuning: Ray Train against plain torchrun, same loop, same model.

    python3 bench/moe_ep.py              # 300 steps each (under a minute on 2 cores)
    python3 bench/moe_ep.py --steps 60   # a smoke test

Both sides run `orchestrator.train.run_expert_parallel` on 2 CPU ranks over gloo: a tiny
Qwen3-MoE (8 experts, 4 per rank via DeepSpeed AutoEP), experts frozen, attention/router/embeddings
trained. Under Ray Train each step also calls `ray.train.report` (a barrier across workers);
under torchrun the report is a no-op. A step's time is forward + backward + optimizer step + report,
timed inside the workers; checkpoint steps and the first warm-up steps are left out.
Prints the median step time of each and the overhead ratio; target: Ray Train under 5% slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.train import (ExpertParallelJob, deepspeed_config,  # noqa: E402
                                expert_parallel_train_loop, run_distributed, run_expert_parallel)

WORKERS, MICRO_BATCH, SEQ, WARMUP = 2, 4, 64, 20  # Ray settles for a few seconds after start


def make_job(steps: int) -> ExpertParallelJob:
    """A Qwen3-MoE small enough for CPU, big enough that a step is compute, not overhead."""
    import torch
    from transformers import Qwen3MoeConfig

    cfg = Qwen3MoeConfig(vocab_size=512, hidden_size=128, intermediate_size=256,
                         moe_intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
                         max_position_embeddings=SEQ)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (4, WORKERS * MICRO_BATCH, SEQ), generator=g)
    ds = deepspeed_config(micro_batch_size=MICRO_BATCH, ep_size=WORKERS, preset="qwen3_moe")
    return ExpertParallelJob(model_config=cfg, tokens=tokens, eval_tokens=tokens[0], ds_config=ds,
                             steps=steps, frozen=(r"\.experts\.",))


def median_step(metrics: dict) -> float:
    return statistics.median(metrics["step_seconds"][WARMUP:])


def mean_step(metrics: dict) -> float:
    """The mean also counts the rare steps that carry a Ray report (every 2 s)."""
    return statistics.fmean(metrics["step_seconds"][WARMUP:])


def under_ray_train(job: ExpertParallelJob, storage: str) -> dict:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        result = run_distributed(expert_parallel_train_loop, {"job": job}, WORKERS, False,
                                 storage, "bench-moe-ep", max_failures=0)
    finally:
        ray.shutdown()
    return result.metrics


def under_torchrun(job: ExpertParallelJob, workdir: str) -> dict:
    import torch

    job_file, out_file = os.path.join(workdir, "job.pt"), os.path.join(workdir, "metrics.json")
    torch.save(job, job_file)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # as Ray gives a 1-CPU worker
    subprocess.run(["torchrun", "--standalone", "--nproc_per_node", str(WORKERS), __file__,
                    "--worker", job_file, out_file], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(Path(out_file).read_text())


def torchrun_worker(job_file: str, out_file: str) -> None:
    """One torchrun rank: the same loop, with a report that does nothing."""
    import deepspeed
    import torch
    import torch.distributed as dist

    deepspeed.init_distributed(dist_backend="gloo")
    job = torch.load(job_file, weights_only=False)
    metrics = run_expert_parallel(job, dist.get_rank(), dist.get_world_size(), lambda m, d: None)
    if dist.get_rank() == 0:
        Path(out_file).write_text(json.dumps(metrics))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return torchrun_worker(*args.worker)
    job = make_job(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        plain = under_torchrun(job, tmp)
        torchrun_wall = time.perf_counter() - began
        began = time.perf_counter()
        ray = under_ray_train(job, os.path.join(tmp, "ray"))
        ray_wall = time.perf_counter() - began
    base, ours = median_step(plain), median_step(ray)
    timed = len(plain["step_seconds"]) - WARMUP
    print(f"expert-parallel Qwen3-MoE, {WORKERS} CPU ranks, gloo, {timed} timed steps each")
    for label, m, wall in (("torchrun ", plain, torchrun_wall), ("Ray Train", ray, ray_wall)):
        print(f"  {label}  median step {median_step(m) * 1e3:6.1f} ms  mean {mean_step(m) * 1e3:6.1f}"
              f" ms  (whole run incl. start-up {wall:5.1f} s)")
    print(f"  overhead ratio (medians) {ours / base:.3f}  ({(ours / base - 1) * 100:+.1f}%; target < +5%)"
          f"   means {mean_step(ray) / mean_step(plain):.3f}")
    print(f"  final loss torchrun {plain['loss']:.4f}  Ray Train {ray['loss']:.4f}  "
          f"experts by rank {next(iter(ray['experts_by_rank'].values()))}")


if __name__ == "__main__":
    main()
