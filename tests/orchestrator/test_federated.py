"""The federated engine: partitions, accounting, the actor pool, the strategy seam, resume."""
from __future__ import annotations

from dataclasses import dataclass

import sys

import numpy as np
import pytest
import ray.cloudpickle
import torch

from orchestrator.federated.comm import DeviceReport, device_seconds, round_summary, tensor_bytes
from orchestrator.federated.config import FederationConfig, PoolConfig
from orchestrator.federated.engine import Checkpointer, Federation, Service
from orchestrator.federated.pool import (Collect, DevicePool, DeviceUpdate, WeightedSum,
                                         default_num_actors, run_devices)
from orchestrator.federated.strategy import RoundPlan, Strategy
from orchestrator.federated.population import device_sizes, partition, sample_population
from orchestrator.federated.reference import MlpTask, initial_state, make_program

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need no tests/ path


def test_partition_uses_every_sample_exactly_once_with_skewed_sizes():
    labels = np.repeat(np.arange(10), 100)
    shards = partition(labels, 20, size_skew=1.0, label_alpha=0.0, rng=np.random.default_rng(0))
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == list(range(1000))
    assert min(map(len, shards)) >= 1 and max(map(len, shards)) > 2 * min(map(len, shards))


def test_dirichlet_label_skew_concentrates_labels_and_still_covers_the_data():
    labels = np.repeat(np.arange(10), 200)
    rng = np.random.default_rng(1)
    skewed = partition(labels, 10, size_skew=0.0, label_alpha=0.1, rng=rng)
    iid = partition(labels, 10, size_skew=0.0, label_alpha=0.0, rng=rng)
    top_share = lambda s: np.bincount(labels[s], minlength=10).max() / len(s)  # noqa: E731
    assert np.mean([top_share(s) for s in skewed]) > 2 * np.mean([top_share(s) for s in iid])
    assert sorted(np.concatenate(skewed).tolist()) == list(range(2000))


def test_partition_is_unbiased_over_seeds():
    """Over seeds, each device's expected label counts follow the global mix (E[count]/E[size])."""
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    counts = np.zeros((5, 4))
    for seed in range(300):
        for n, shard in enumerate(partition(labels, 5, 0.5, 0.5, np.random.default_rng(seed))):
            counts[n] += np.bincount(labels[shard], minlength=4)
    mix = counts / counts.sum(axis=1, keepdims=True)
    assert np.allclose(mix, [0.1, 0.2, 0.3, 0.4], atol=0.04), mix


def test_device_sizes_sum_to_the_total():
    sizes = device_sizes(1003, 7, 0.8, np.random.default_rng(0))
    assert sizes.sum() == 1003 and sizes.min() >= 1


def test_tensor_bytes_counts_real_tensor_sizes():
    state = {"w": torch.zeros(10, 4), "b": torch.zeros(4, dtype=torch.float16), "n": [np.zeros(3)]}
    assert tensor_bytes(state) == 10 * 4 * 4 + 4 * 2 + 3 * 8


def test_a_tensor_under_two_keys_crosses_the_wire_once():
    """Tied weights (an LM head that is the embedding) are one tensor, as torch.save stores."""
    emb = torch.zeros(100, 8)
    assert tensor_bytes({"embed": emb, "lm_head": emb, "b": torch.zeros(8)}) == 100 * 8 * 4 + 8 * 4
    assert tensor_bytes({"embed": emb, "copy": emb.clone()}) == 2 * 100 * 8 * 4


class _Compact:
    """A device program that declares what it sent: a 10-byte download and a 3-byte upload."""

    def train(self, device, global_state, task):
        return DeviceUpdate({"w": torch.zeros(1000)}, 1.0, 1, 0.0, {}, bytes_up=3, bytes_down=10)


def test_bytes_a_program_declares_replace_the_measured_ones():
    _, reports = run_devices(_Compact(), [0, 1], {"w": torch.zeros(50)}, 0, 0, Collect())
    assert [(r.bytes_up, r.bytes_down) for r in reports] == [(3, 10), (3, 10)]
    _, measured = run_devices(make_program(MlpTask(num_devices=1)), [0],
                              initial_state(MlpTask(num_devices=1)), 0, 0, Collect())
    assert measured[0].bytes_down == tensor_bytes(initial_state(MlpTask(num_devices=1)))


def test_a_round_nobody_joined_collects_nothing():
    assert Collect().combine([]) is None and Collect().combine([[], []]) is None


def test_checkpoints_are_ordered_by_round_number_not_text(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    for r in (9998, 9999, 10000):
        ckpt.save(r, {"round": r})
    assert ckpt.latest()["round"] == 10000
    assert sorted(p.name for p in tmp_path.glob("round_*.pt")) == ["round_10000.pt",
                                                                   "round_9999.pt"]


@pytest.mark.slow
def test_a_pool_sized_inside_a_tune_trial_leaves_out_the_trials_own_cpu(local_ray, tmp_path):
    """Inside a 1-CPU Tune trial on 2 CPUs, a pool of 2 would wait forever for the trial's CPU."""
    from ray import tune

    def trial(config):
        tune.report({"actors": default_num_actors(1.0, 0.0)})

    results = tune.Tuner(tune.with_resources(trial, {"cpu": 1}),
                         run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert default_num_actors(1.0, 0.0) == 2
    assert results[0].metrics["actors"] == 1


def test_round_time_is_the_slowest_devices_download_compute_upload():
    pop = sample_population(FederationConfig(num_devices=2), np.random.default_rng(0))
    reports = [DeviceReport(0, 10**6, 2 * 10**6, 1e9, 10), DeviceReport(1, 0, 0, 0.0, 10)]
    expected = 2e6 * 8 / (pop.downlink_mbps[0] * 1e6) + 1e9 / (pop.speed_gflops[0] * 1e9) \
        + 1e6 * 8 / (pop.uplink_mbps[0] * 1e6)
    assert device_seconds(reports[0], pop) == pytest.approx(expected)
    summary = round_summary(reports, pop)
    assert summary["sim_seconds"] == pytest.approx(expected)
    assert summary["bytes_up"] == 10**6 and summary["bytes_down"] == 2 * 10**6


def test_weighted_sum_is_fedavg_when_normalized_and_a_plain_sum_otherwise():
    ups = [DeviceUpdate({"w": torch.tensor([1.0])}, 1.0, 1, 0, {}),
           DeviceUpdate({"w": torch.tensor([4.0])}, 3.0, 3, 0, {})]
    avg, raw = WeightedSum(True), WeightedSum(False)
    assert avg.combine([avg.partial(ups[:1]), avg.partial(ups[1:])])["w"].item() == 13 / 4
    assert raw.combine([raw.partial(ups)])["w"].item() == 13.0


@pytest.mark.slow
def test_an_actor_folds_each_update_before_the_next_device_trains():
    events = []

    class Program:
        def train(self, device, global_state, task):
            events.append(f"train {device}")
            return DeviceUpdate({"w": torch.tensor([float(device)])}, 1.0, 1, 0, {})

    class Recording(WeightedSum):
        def partial(self, updates):
            return super().partial(events.append(f"fold {u.device}") or u for u in updates)

    (acc, total), reports = run_devices(Program(), [0, 1, 2], {}, 0, 0, Recording(False))
    assert events == ["train 0", "fold 0", "train 1", "fold 1", "train 2", "fold 2"]
    assert acc["w"].item() == 3.0 and total == 3.0 and [r.device for r in reports] == [0, 1, 2]


def test_pool_round_matches_the_plain_in_process_loop_and_counts_bytes(local_ray):
    task = MlpTask(num_devices=6)
    state, reducer = initial_state(task), WeightedSum()
    pool = DevicePool(lambda: make_program(task), num_actors=2)
    aggregate, reports = pool.round(list(range(6)), state, 0, 0, reducer)
    expected, plain = run_devices(make_program(task), range(6), state, 0, 0, reducer)
    expected = reducer.combine([expected])
    assert all(torch.allclose(aggregate[k], expected[k], atol=1e-6) for k in state)
    assert [r.device for r in reports] == list(range(6))
    assert all(r.bytes_up == r.bytes_down == tensor_bytes(state) for r in reports)
    pool.shutdown()


def _population(n: int, **ranges):
    return sample_population(FederationConfig(num_devices=n, **ranges), np.random.default_rng(0))


@pytest.mark.slow
def test_a_run_killed_after_a_round_resumes_to_the_identical_final_state(local_ray, tmp_path):
    task = MlpTask(num_devices=8)
    pop = _population(8, availability_low=0.5, availability_high=0.9)
    pool = PoolConfig(num_actors=2)

    def train(fed, on_round=lambda r, m: None):
        with fed.session(pool, lambda: make_program(task), pop) as fl:
            return fl.run("mlp", Strategy(participation=0.75), initial_state(task), 4,
                          on_round=on_round)

    straight = train(Federation(seed=3))

    class Killed(Exception):
        pass

    def die_after_round_1(r, metrics):
        if r == 1:
            raise Killed

    with pytest.raises(Killed):
        train(Federation(seed=3, checkpoint_dir=tmp_path), on_round=die_after_round_1)
    resumed = train(Federation(seed=3, checkpoint_dir=tmp_path))
    assert all(torch.equal(straight.state[k], resumed.state[k]) for k in straight.state)
    assert [h["cum_bytes"] for h in straight.history] == [h["cum_bytes"] for h in resumed.history]
    assert straight.history[-1]["device_loss"] == resumed.history[-1]["device_loss"]


# --------------------------------------------------------------------------- the strategy seam
@dataclass(frozen=True)
class Scale:
    factor: float


class _Echo:
    """Uploads the instruction it got (and asks the `counter` service, when there is one)."""

    def train(self, device, global_state, task):
        if "counter" in task.services:
            import ray

            ray.get(task.services["counter"].add.remote(1))
        return DeviceUpdate({"w": torch.tensor([task.instructions.factor * device])}, 1.0, 1,
                            0.0, {}, bytes_side=7)


class _Counter:
    def __init__(self, start: int):
        self.n = start

    def add(self, k: int) -> int:
        self.n += k
        return self.n


class _PerDevice(Strategy):
    """Device d is told `Scale(d)`; the state keeps the plain sum; stops after two rounds."""

    def configure(self, round_idx, state, online, rng, services):
        return RoundPlan(online.tolist(), {int(d): Scale(float(d)) for d in online},
                         WeightedSum(normalize=False))

    def aggregate(self, round_idx, state, aggregate, reports, services):
        import ray

        return {"w": aggregate["w"], "calls": torch.tensor(ray.get(services["counter"].add.remote(0)))}

    def finished(self, round_idx, history):
        return round_idx == 1


@pytest.mark.slow
def test_each_device_gets_its_own_instructions_and_the_services_the_engine_started(local_ray):
    fed = Federation(seed=0)
    with fed.session(PoolConfig(num_actors=2), _Echo, _population(3),
                     {"counter": Service(_Counter, (100,), cpus=0)}) as fl:
        result = fl.run("echo", _PerDevice(), {"w": torch.zeros(1)}, rounds=5,
                        latency=lambda r, reports, pop: 10.0 * len(reports))
        handle = fl.services["counter"]
    assert result.state["w"].item() == 0 * 0 + 1 * 1 + 2 * 2      # sum of d * d: per-device
    assert result.state["calls"].item() == 100 + 2 * 3             # every device, two rounds
    assert len(result.history) == 2                                # finished() stopped it
    assert [h["sim_seconds"] for h in result.history] == [30.0, 30.0]   # the latency model's
    assert result.history[0]["bytes_side"] == 3 * 7                # the ledger counts side bytes
    assert result.history[-1]["cum_bytes"] == sum(h["bytes_up"] + h["bytes_down"] +
                                                  h["bytes_side"] for h in result.history)
    import time

    import ray
    deadline = time.time() + 60  # ray.kill is asynchronous: a call may still land just after it
    with pytest.raises(ray.exceptions.RayActorError):               # stopped with the session
        while time.time() < deadline:
            ray.get(handle.add.remote(0), timeout=30)
            time.sleep(0.2)


def test_a_plan_with_one_instruction_sends_it_to_every_device():
    updates, reports = run_devices(_Echo(), [1, 2], {}, 0, 0, Collect(), Scale(2.0))
    assert [u.update["w"].item() for u in updates] == [2.0, 4.0]
    assert [r.bytes_side for r in reports] == [7, 7]
