"""Benchmark one FedAvg round on the federated engine against a plain in-process loop.

    python3 bench/federated_round.py            # N = 20, 100, 1000 devices
    python3 bench/federated_round.py --quick    # N = 20, 100

The same device program (a small MLP, 256 samples per device, 4 local SGD steps; see
orchestrator/federated/reference.py) runs (a) sequentially in this process, the plain loop, and
(b) on the engine's pool of long-lived Ray actors (one per CPU) that multiplex the devices and
pre-aggregate. Prints the median seconds per round of each, the engine/plain ratio (target: at
most 1.0x at N = 100 on 2 cores), and the resident memory of driver plus actors, in total and per
simulated device (target: N = 1,000 within 2x of N = 100). Flower's simulation is measured only
when `flwr` is importable (it is not a dependency; install it in a separate environment).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.federated.pool import DevicePool, WeightedSum, run_devices  # noqa: E402
from orchestrator.federated.reference import MlpTask, initial_state, make_program  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip N = 1000")
    args = parser.parse_args()
    import ray

    sizes = [20, 100] if args.quick else [20, 100, 1000]
    task = MlpTask(num_devices=max(sizes))
    state, reducer = initial_state(task), WeightedSum()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    pool = DevicePool(lambda: make_program(task))
    actor_pids = ray.get([a.pid.remote() for a in pool.actors])
    program = make_program(task)
    print(f"engine: {pool.size} device actors on {os.cpu_count()} CPUs; "
          f"MLP {program.params:,d} params, {task.samples_per_device} samples/device")
    print(f"{'N':>6} {'plain s/round':>14} {'engine s/round':>15} {'engine/plain':>13} "
          f"{'RSS MB (driver+actors)':>23} {'MB/device':>10}")
    rows = []
    for n in sizes:
        devices = list(range(n))
        plain = median_round_seconds(
            lambda r: reducer.combine([run_devices(program, devices, state, r, 0, reducer)[0]]))
        engine = median_round_seconds(lambda r: pool.round(devices, state, r, 0, reducer))
        rss = rss_mb([os.getpid(), *actor_pids])
        rows.append((n, plain, engine, rss))
        print(f"{n:>6} {plain:>14.3f} {engine:>15.3f} {engine / plain:>12.2f}x "
              f"{rss:>23.0f} {rss / n:>10.2f}")
    if len(rows) == 3:
        print(f"memory N=1000 / N=100: {rows[2][3] / rows[1][3]:.2f}x (target <= 2x)")
    try:
        import flwr  # noqa: F401
    except ImportError:
        print("Flower (flwr) is not installed here: its column is skipped")
    else:
        print("flwr is importable, but no Flower run is wired in yet: compare by hand")
    pool.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
