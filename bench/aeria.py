"""Benchmark the aeria market: auction time vs bidders, and the batched sweep path vs naive Tune.

    python3 bench/aeria.py                 # full: auctions up to 100,000 bidders, 10,000-config sweep
    python3 bench/aeria.py --quick         # smaller sweep, for a smoke test

Prints, measured side by side in one run (this machine is noisy; compare ratios, not seconds):
1. seconds for one AERIA auction with edge capacity and the joint choice of configuration (and
   for drawing the market) at 1,000 / 10,000 / 100,000 bidders of one service, who overload its
   one edge server about 3x / 35x / 350x; target: under 1 s at 100,000.
2. configurations per second of `orchestrator sweep` with batched trials (sweep.batch_size) against
   naive one-configuration-per-Tune-trial sweeps, through the real CLI, Ray Tune and MLflow;
   target: 10,000 configurations in under 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.cli import main as cli  # noqa: E402
from orchestrator.config import RayConfig, load_experiment  # noqa: E402
from orchestrator.runtime import start_local_ray  # noqa: E402
from workloads.aeria.allocation import aeria_with_capacity, run_mechanism  # noqa: E402
from workloads.aeria.market import generate_market  # noqa: E402
from workloads.aeria.properties import offered_load  # noqa: E402
from workloads.aeria.profiles import load_profiles  # noqa: E402
from workloads.aeria.workload import mechanism_params  # noqa: E402

SWEEP = REPO / "experiments" / "aeria" / "sweep.yaml"


def time_auctions(sizes: list[int], repeats: int = 5) -> list[dict]:
    """Median seconds of one AERIA auction among exactly n bidders of one service (items
    included: they are computed once per market), of drawing an n-user market over all four
    services, and of AERIA over that whole market."""
    cfg = load_experiment(SWEEP).aeria
    table = load_profiles(cfg.profiles_path())
    profiles = list(table.values())
    params = mechanism_params(cfg)
    rows = []
    for n in sizes:
        market = generate_market([table["resnet"]], n * 3, np.random.default_rng(0), cfg.values,
                                 cfg.users, cfg.edge)
        ok = np.flatnonzero(market.feasible)[:n]            # exactly n bidders that can be served
        one = market.take(ok)
        bids = one.bid

        def auction_once(r):
            items = one.take(np.arange(n)).items(0, np.arange(n))   # a fresh market: no cache
            return aeria_with_capacity(bids, items, 1.0, params, r)
        auction = _median_seconds(auction_once, repeats)
        draw = _median_seconds(lambda r: generate_market(profiles, n, r, cfg.values, cfg.users,
                                                         cfg.edge), repeats)
        full = generate_market(profiles, n, np.random.default_rng(1), cfg.values, cfg.users,
                               cfg.edge)
        whole = _median_seconds(lambda r: run_mechanism("aeria", full.take(np.arange(n)),
                                                        params, r), repeats)
        rows.append({"bidders": n, "auction_s": auction, "market_draw_s": draw,
                     "market_auction_s": whole, "load": offered_load(one)})
    return rows


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for r in range(repeats):
        rng = np.random.default_rng(r)
        t0 = time.perf_counter()
        fn(rng)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_sweep(num_samples: int, batch_size: int, label: str) -> dict:
    """Wall seconds of one `orchestrator sweep` (Ray already up) and its configurations/second."""
    grid = len(load_experiment(SWEEP).sweep.params.get("aeria.consensus_base", {}).get("grid", [1]))
    configs = grid * num_samples * batch_size
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the sweep's own summary table
        code = cli(["sweep", str(SWEEP), f"sweep.num_samples={num_samples}",
                    f"sweep.batch_size={batch_size}", f"mlflow.experiment=bench-{label}"])
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"the {label} sweep failed (exit {code})")
    return {"path": label, "trials": grid * num_samples, "configs": configs, "seconds": seconds,
            "configs_per_s": configs / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a sweep of at least 1,000 configurations instead of 10,000")
    args = parser.parse_args()
    import ray

    print("== one auction (AERIA, one service) ==")
    for row in time_auctions([1_000, 10_000, 100_000]):
        print(f"{row['bidders']:>8,d} bidders (load {row['load']:.2g}x): one auction "
              f"{row['auction_s']:.4f} s | "
              f"{row['bidders']:,d}-user market: draw {row['market_draw_s']:.4f} s, "
              f"AERIA over its 4 services {row['market_auction_s']:.4f} s")

    target = 1_000 if args.quick else 10_000
    grid = len(load_experiment(SWEEP).sweep.params.get("aeria.consensus_base", {}).get("grid", [1]))
    batch = 500
    samples = -(-target // (grid * batch))  # ceil: at least `target` configurations
    naive_samples = 4 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        start_local_ray(RayConfig(num_cpus=os.cpu_count()))  # as `python3 -m orchestrator run` does
        batched = time_sweep(samples, batch, "batched")
        naive = time_sweep(naive_samples, 1, "naive")
        ray.shutdown()
    print("\n== sweep: batched trials vs one Tune trial per configuration ==")
    for r in (batched, naive):
        print(f"{r['path']:>8}: {r['configs']:>6,d} configs in {r['trials']:>3d} trials, "
              f"{r['seconds']:7.1f} s, {r['configs_per_s']:8.1f} configs/s")
    ratio = batched["configs_per_s"] / naive["configs_per_s"]
    print(f"batched / naive throughput: {ratio:.1f}x; naive would need "
          f"{batched['configs'] / naive['configs_per_s']:.0f} s for {batched['configs']:,d} configs")


if __name__ == "__main__":
    main()
