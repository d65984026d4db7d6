"""Time one FedAvg round of the reference MLP under Flower's simulation engine.

    /tmp/flwrenv/bin/python bench/flower_round.py --devices 20 100 --rounds 3

Run it with the Python of a separate environment: flwr[simulation] 1.42 pins ray 2.55, which
conflicts with the project's ray. Create that environment with

    python3 -m venv /tmp/flwrenv
    /tmp/flwrenv/bin/pip install torch "flwr[simulation]==1.42.0" numpy psutil "omegaconf>=2.3,<3"

(omegaconf only because importing orchestrator.federated.reference pulls in the config module.)
bench/federated_round.py runs this script as a subprocess for its Flower column.

The work is the plain loop's: every Flower ClientApp call runs the same `MlpProgram.train` on the
same device data (device = Flower partition id), built once per Ray worker process as the plain
loop builds it once; the server is Flower's own message-API FedAvg (`flwr.serverapp.strategy`)
sampling all N nodes (fraction_train 1.0) with federated evaluation off, as the plain loop does
not evaluate. It runs through `flwr.simulation.run_simulation` (Flower's in-process entry point
to the same Ray simulation backend `flwr run` uses; deprecated in favour of the CLI but still
supported), with Ray's defaults for `ray.init` (all CPUs) and client resources of 1 CPU per
ClientApp by default: as many concurrent clients as the engine has actors (one per CPU). Flower's
own default is 2 CPUs per client, i.e. a single client at a time on 2 cores: `--client-cpus 2`.

A round is timed from the strategy's configure_train to the end of its aggregate_train (send,
all clients train, replies, weighted average), like the engine's `pool.round`. Round 1 is a
warm-up (actor start, imports) and is dropped; the median of the rest is reported, one line per
N: `FLOWER_ROUND {"devices": N, "seconds": ..., ...}`. Memory is the peak resident set, sampled
every 0.2 s, of the driver plus Flower's ClientApp actors (comparable to the engine's driver plus
actors) and of the whole process tree (also Ray's raylet, GCS and idle workers).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flwr.app import (ArrayRecord, ConfigRecord, Context, Message, MetricRecord,  # noqa: E402
                      RecordDict)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from orchestrator.federated.reference import MlpTask, initial_state, make_program  # noqa: E402

MARKER = "FLOWER_ROUND "
SEED = 0  # the plain loop's seed

client_app = ClientApp()
_programs: dict[MlpTask, object] = {}  # per worker process; lives here so Ray imports, not pickles


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One device's local SGD: the plain loop's `MlpProgram.train`, wrapped in Flower records."""
    cfg = msg.content["config"]
    task = MlpTask(num_devices=int(cfg["num-devices"]))
    if task not in _programs:
        _programs[task] = make_program(task)
    program = _programs[task]
    device = int(context.node_config["partition-id"])
    up = program.train(device, msg.content["arrays"].to_torch_state_dict(),
                       int(cfg["server-round"]), SEED)
    metrics = MetricRecord({"num-examples": up.weight, "loss": up.metrics["loss"]})
    return Message(RecordDict({"arrays": ArrayRecord(up.update), "metrics": metrics}),
                   reply_to=msg)


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, stamping when each round's training starts and its aggregate is ready."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.seconds: dict[int, float] = {}

    def configure_train(self, server_round, arrays, config, grid):
        self.started[server_round] = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        out = super().aggregate_train(server_round, replies)
        self.seconds[server_round] = time.perf_counter() - self.started[server_round]
        return out


class PeakRss(threading.Thread):
    """Samples the resident memory of this process tree until stopped; keeps the peaks."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.done = interval, threading.Event()
        self.clients_mb = self.tree_mb = 0.0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(self.interval):
            clients = tree = me.memory_info().rss
            for p in me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                    tree += rss
                    if "ClientAppActor" in " ".join(p.cmdline()):
                        clients += rss
                except psutil.Error:  # exited between listing and reading
                    pass
            self.clients_mb = max(self.clients_mb, clients / 2**20)
            self.tree_mb = max(self.tree_mb, tree / 2**20)


def run_one(n: int, rounds: int, client_cpus: float) -> dict:
    """One simulation of `rounds` + 1 rounds over n clients; the first round is the warm-up."""
    from flwr.simulation import run_simulation

    task = MlpTask(num_devices=n)
    strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                           min_available_nodes=n)
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_state(task)),
                       num_rounds=rounds + 1, train_config=ConfigRecord({"num-devices": n}))

    rss = PeakRss()
    rss.start()
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": client_cpus,
                                                        "num_gpus": 0.0}})
    total = time.perf_counter() - t0
    rss.done.set()
    rss.join()
    timed = [strategy.seconds[r] for r in range(2, rounds + 2)]
    return {"devices": n, "seconds": statistics.median(timed), "warmup_seconds":
            strategy.seconds[1], "round_seconds": timed, "simulation_seconds": total,
            "rss_mb": rss.clients_mb, "tree_rss_mb": rss.tree_mb, "client_cpus": client_cpus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up")
    parser.add_argument("--client-cpus", type=float, default=1.0,
                        help="Ray CPUs per ClientApp (Flower's own default is 2)")
    parser.add_argument("--verbose", action="store_true", help="keep Flower's INFO logs")
    args = parser.parse_args()
    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    # Import this file as a module so Ray workers import the ClientApp (and keep one program per
    # process) instead of unpickling a fresh copy of __main__'s globals with every message.
    from bench import flower_round

    for n in args.devices:
        result = flower_round.run_one(n, args.rounds, args.client_cpus)
        print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
