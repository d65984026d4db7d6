"""Benchmark one FedAvg round on the federated engine against a plain in-process loop.

    python3 bench/federated_round.py            # N = 20, 100, 1000, 10000 devices
    python3 bench/federated_round.py --quick    # N = 20, 100
    python3 bench/federated_round.py --quick --flower-python /tmp/flwrenv/bin/python

The same device program (a small MLP, 256 samples per device, 4 local SGD steps; see
orchestrator/federated/reference.py) runs (a) sequentially in this process, the plain loop, and
(b) as one round of the engine's round loop (`ctx.federation`'s `Session.run` with a FedAvg
`Strategy`: selection, instructions, the pool of long-lived Ray actors that multiplex the devices
and pre-aggregate, aggregation, the ledger and the clock). Prints the median seconds per round of
each, the engine/plain ratio (target: at most 0.6x at N = 100 on 2 cores), and the resident memory
of driver plus actors, in total and per simulated device (target: N = 10,000 within 2x of
N = 100).

With `--flower-python` (or env FLOWER_PYTHON) it also runs the same work on Flower's simulation
engine, bench/flower_round.py, in that interpreter, after the engine has shut down, and adds its
seconds per round, its ratios to the plain loop and to the engine, and the peak memory of its
driver plus ClientApp actors. Flower is not a dependency: flwr[simulation] 1.42 pins ray 2.55, so
it needs its own environment (how to create it: bench/flower_round.py). Flower's N = 1,000 takes
about 40 s here (warm-up and 3 rounds of ~7 s), so it runs too; `--flower-max-devices` caps N.
Measured here (session 4, `--quick`): seconds per round at N = 20 / 100: plain 0.031 / 0.167,
engine 0.025 / 0.084 (0.80x / 0.50x plain), Flower 0.207 / 0.426 (6.6x / 2.6x plain, 8.2x / 5.1x
the engine) with 1 CPU per client; with Flower's default 2 CPUs per client, 0.208 / 0.634 s.
Measured 2026-12-06 (full engine round, Strategy seam): engine/plain 0.77x / 0.58x / 0.54x /
0.59x at N = 20 / 100 / 1,000 / 10,000; RSS 1,213 MB at N = 100, 1,529 MB at N = 10,000 (1.26x);
Flower 6.40x / 2.50x / 7.79x the plain loop at N = 20 / 100 / 1,000.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.config import RayConfig  # noqa: E402
from orchestrator.federated.config import FederationConfig  # noqa: E402
from orchestrator.federated.engine import Federation  # noqa: E402
from orchestrator.federated.pool import WeightedSum, run_devices  # noqa: E402
from orchestrator.federated.population import sample_population  # noqa: E402
from orchestrator.federated.strategy import Strategy  # noqa: E402
from orchestrator.federated.reference import MlpTask, initial_state, make_program  # noqa: E402
from orchestrator.runtime import start_local_ray  # noqa: E402


def median_round_seconds(fn, rounds: int = 3) -> float:
    fn(0)  # warm-up: imports, first allocations, actor start
    times = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_mb(pids: list[int]) -> float:
    import psutil

    return sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20


FLOWER_SCRIPT = Path(__file__).resolve().parent / "flower_round.py"
FLOWER_MARKER = "FLOWER_ROUND "
FLOWER_VENV_HINT = ("python3 -m venv /tmp/flwrenv && /tmp/flwrenv/bin/pip install torch "
                    "'flwr[simulation]==1.42.0' numpy psutil 'omegaconf>=2.3,<3'")


def flower_rounds(python: str, sizes: list[int], timeout: float) -> dict[int, dict]:
    """Flower's numbers per N, one subprocess each, so a slow or failing N costs only itself.

    The subprocess gets no PYTHONPATH or RAY_ADDRESS from here: its Ray (2.55) must start its own
    cluster with its own packages, not find this environment's. It gets its own session, so a
    timeout ends its Ray processes (raylet, GCS, actors) along with it.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    results = {}
    for n in sizes:
        cmd = [python, str(FLOWER_SCRIPT), "--devices", str(n)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            print(f"flower N={n}: no result within {timeout:.0f}s, skipped")
            continue
        lines = [ln for ln in out.splitlines() if ln.startswith(FLOWER_MARKER)]
        if proc.returncode or not lines:
            tail = "\n".join((out + err).splitlines()[-15:])
            print(f"flower N={n}: failed (exit {proc.returncode}):\n{tail}")
            continue
        results[n] = json.loads(lines[-1][len(FLOWER_MARKER):])
    return results


def print_table(rows: list[tuple], flower: dict[int, dict]) -> None:
    """One table at the end: Flower runs only after the engine's Ray has shut down."""
    cols = (f"{'N':>6} {'plain s/round':>14} {'engine s/round':>15} {'engine/plain':>13} "
            f"{'RSS MB (driver+actors)':>23} {'MB/device':>10}")
    if flower:
        cols += (f" {'flower s/round':>15} {'flower/plain':>13} {'flower/engine':>14} "
                 f"{'flower MB':>10}")
    print(cols)
    for n, plain, engine, rss in rows:
        line = (f"{n:>6} {plain:>14.3f} {engine:>15.3f} {engine / plain:>12.2f}x "
                f"{rss:>23.0f} {rss / n:>10.2f}")
        if n in flower:
            f = flower[n]
            line += (f" {f['seconds']:>15.3f} {f['seconds'] / plain:>12.2f}x "
                     f"{f['seconds'] / engine:>13.2f}x {f['rss_mb']:>10.0f}")
        elif flower:
            line += f" {'-':>15} {'-':>13} {'-':>14} {'-':>10}"
        print(line)
    for n, *_, rss in rows[2:]:
        print(f"memory N={n} / N=100: {rss / rows[1][3]:.2f}x (target <= 2x at N = 10,000)")
    if flower:
        print("flower MB: peak RSS of Flower's driver plus its ClientApp actors "
              "(RSS MB: driver plus engine actors after the rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip N = 1000 and 10000")
    parser.add_argument("--flower-python", default=os.environ.get("FLOWER_PYTHON"),
                        help="python of an environment with flwr[simulation] (env FLOWER_PYTHON)")
    parser.add_argument("--flower-max-devices", type=int, default=1000,
                        help="largest N that Flower runs")
    parser.add_argument("--flower-timeout", type=float, default=900,
                        help="seconds allowed for each Flower N")
    args = parser.parse_args()
    import ray

    sizes = [20, 100] if args.quick else [20, 100, 1000, 10000]
    task = MlpTask(num_devices=max(sizes))
    state, reducer = initial_state(task), WeightedSum()
    start_local_ray(RayConfig(num_cpus=os.cpu_count()))  # as `python3 -m orchestrator run` does
    fed = FederationConfig(num_devices=1)
    program = make_program(task)
    rows = []
    for n in sizes:
        devices = list(range(n))
        population = sample_population(FederationConfig(num_devices=n), np.random.default_rng(n))
        with Federation(seed=0).session(fed, lambda: make_program(task), population) as fl:
            if n == sizes[0]:
                print(f"engine: {fl.pool.size} device actors on {os.cpu_count()} CPUs; MLP "
                      f"{program.params:,d} params, {task.samples_per_device} samples/device")
            actor_pids = ray.get([a.pid.remote() for a in fl.pool.actors])
            plain = median_round_seconds(lambda r: reducer.combine(
                [run_devices(program, devices, state, r, 0, reducer)[0]]))
            engine = median_round_seconds(lambda r: fl.run(f"r{r}", Strategy(), state, 1))
            rss = rss_mb([os.getpid(), *actor_pids])
        rows.append((n, plain, engine, rss))
        print(f"N={n}: measured", flush=True)
    ray.shutdown()
    flower = {}
    if args.flower_python:
        flower_sizes = [n for n in sizes if n <= args.flower_max_devices]
        print(f"flower: {args.flower_python} {FLOWER_SCRIPT.name}, N = {flower_sizes}"
              + (f" (N > {args.flower_max_devices} skipped: --flower-max-devices)"
                 if len(flower_sizes) < len(sizes) else ""), flush=True)
        flower = flower_rounds(args.flower_python, flower_sizes, args.flower_timeout)
    else:
        print(f"Flower column skipped: pass --flower-python (or set FLOWER_PYTHON) to the python "
              f"of a separate environment with flwr, e.g.: {FLOWER_VENV_HINT}")
    print_table(rows, flower)


if __name__ == "__main__":
    main()
