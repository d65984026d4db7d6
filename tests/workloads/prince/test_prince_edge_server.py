"""The edge server on Ray Train: it answers like `ServerSide`, survives a killed rank, and its
data-parallel step over two ranks is the one-rank step."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from workloads.prince.data import load_tenant_data
from workloads.prince.programs import TenantSpec
from workloads.prince.split import ServerSide, device_forward
from workloads.prince.tenants import build_tenant

pytestmark = pytest.mark.usefixtures("local_ray")


def _spec() -> TenantSpec:
    return TenantSpec("vit", "tiny", 1, None, 0, 64, (tuple(range(16)),), 4, 2, 0.05, "sgd")


def _fresh_split():
    """The spec's model as the server's ranks build it (the driver's cached split may have been
    trained by another test's evaluator)."""
    spec = _spec()
    return build_tenant(spec.name, spec.size, spec.cut_layer, spec.pretrained, spec.seed)


def _batches(n_rounds: int = 3, devices: int = 2) -> list[list[tuple]]:
    """Per round, per device: two (smashed, labels) steps from fixed real CIFAR-10 images."""
    split, data = _fresh_split(), load_tenant_data("vit", "train", 64)
    out = []
    for r in range(n_rounds):
        steps = []
        for d in range(devices):
            for s in range(2):
                idx = np.arange(4) + 4 * (s + 2 * d) + 16 * r % 48
                batch = data.batch(idx)
                with torch.no_grad():
                    steps.append((d, device_forward(split, batch), batch["labels"]))
        out.append(steps)
    return out


def _run_local(rounds) -> tuple[list[float], dict]:
    side = ServerSide(_fresh_split().server, 0.05, "sgd")
    losses, state = [], side.state()
    for steps in rounds:
        side.begin_round(state)
        losses += [side.step(d, x, y)[0] for d, x, y in steps]
        state = side.aggregate({0: 0.5, 1: 0.5}, normalize=False)
    return losses, state


def _run_service(rounds, group, pause_s: float = 0.0) -> tuple[list[float], dict, list]:
    from orchestrator.federated.engine import Service, start_services, stop_services
    from workloads.prince.edge_server import EdgeServer

    specs = {"vit": Service(EdgeServer, (_spec(), group), cpus=0)}
    handles = start_services(specs)
    server, losses = handles["vit"], []
    try:
        state = ray_get(server.state.remote())
        for steps in rounds:
            ray_get(server.begin_round.remote(state))
            losses += [ray_get(server.step.remote(d, x, y, None))[0] for d, x, y in steps]
            state = ray_get(server.aggregate.remote({0: 0.5, 1: 0.5}, False))
            time.sleep(pause_s)  # Ray Train's controller commits a checkpoint on its next poll
        starts = ray_get(server.ranks_started.remote())
    finally:
        stop_services(handles, specs)
    return losses, state, starts


def ray_get(ref):
    import ray

    return ray.get(ref, timeout=300)


def _same(a: dict, b: dict, **tol) -> bool:
    return set(a) == set(b) and all(torch.allclose(a[k], b[k], **tol) for k in a)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(losses, final W^S, ranks started) of 3 rounds on a one-rank Ray Train edge server."""
    from workloads.prince.edge_server import ServerGroup

    return _run_service(_batches(), ServerGroup(storage=str(tmp_path_factory.mktemp("clean"))))


def test_the_ray_train_server_answers_every_step_as_the_in_process_server_side(clean):
    local_losses, local_state = _run_local(_batches())
    losses, state, starts = clean
    assert starts == [0]
    assert losses == pytest.approx(local_losses, rel=1e-6)
    assert _same(state, local_state, atol=1e-6)


def test_a_server_rank_killed_mid_round_restarts_from_its_checkpoint_to_the_same_weights(
        clean, tmp_path):
    """Rank 0 is SIGKILLed after 10 replies (1 state + 6 for round 0, then begin_round and two
    steps of round 1); Ray Train restarts the group from round 0's checkpoint (committed during
    the pause after it), and round 1's requests so far are replayed into fresh copies."""
    from workloads.prince.edge_server import ServerGroup

    killed_losses, killed, starts = _run_service(
        _batches(), ServerGroup(storage=str(tmp_path), kill_rank0_after=10), pause_s=3.0)
    assert starts == [0, 7], "rank 0 restarted from round 0's checkpoint (next request: 7)"
    assert killed_losses == clean[0]
    assert _same(killed, clean[1], atol=0, rtol=0)
    assert list(tmp_path.glob("edge-vit-*/checkpoint_*")), "the group reported no checkpoint"


def test_two_server_ranks_split_each_step_and_reach_the_one_rank_weights(clean, tmp_path):
    """Each rank back-propagates half the rows; the all-reduced gradients make the same steps."""
    from workloads.prince.edge_server import ServerGroup

    losses, state, starts = _run_service(_batches(), ServerGroup(workers=2,
                                                                 storage=str(tmp_path)))
    assert starts == [0, 0]
    assert losses == pytest.approx(clean[0], rel=1e-5)
    assert _same(state, clean[1], atol=1e-5)


def test_a_group_out_of_restarts_fails_its_callers_instead_of_leaving_them_waiting(tmp_path):
    from workloads.prince.edge_server import ServerGroup

    with pytest.raises(Exception, match="Ray Train run ended before answering"):
        _run_service(_batches(1), ServerGroup(storage=str(tmp_path), max_failures=0,
                                              kill_rank0_after=2))
