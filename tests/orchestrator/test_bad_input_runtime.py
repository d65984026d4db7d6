"""Bad input about where an experiment runs gets one line naming the key or flag, exit status 2,
before Ray starts or an MLflow run opens, and writes nothing.

The classes: work a new local Ray could never schedule (Ray does not refuse it, it waits for
ever), a malformed or unreachable Ray address, job API or MLflow store, a `state_dir` that is a
file. Every case calls the real CLI in-process on a fresh working directory with its store and
state_dir inside it, and checks the directory is exactly as it was.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import REPO, refuse_starts

EXPERIMENTS = REPO / "experiments"
TINY = "{name: tiny, kind: generative, path: tiny, max_examples: 4"  # a built-in local model


def experiment(workload: str, name: str = "quickstart") -> str:
    return str(EXPERIMENTS / workload / f"{name}.yaml")


def robustness_models(tiny: str, first_stored: bool = True) -> str:
    """`robustness.models=[...]`: the tiny local model with `tiny`'s settings (no package)."""
    stored = "{name: ChatGPT}, " if first_stored else ""
    return f"robustness.models=[{stored}{TINY}, {tiny}}}]"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- resources
# (verb, config, overrides, the key the line must name). Each asks a local Ray of ray.num_cpus=2
# and ray.num_gpus=0 (the shipped quickstarts and sweeps) for more than it has at one time.
RESOURCE_CASES = {
    "deepfusion_ray_train_workers_cpus": (
        "run", experiment("deepfusion"), ["deepfusion.run.ep_cpus_per_worker=2"],
        "deepfusion.run.ep_cpus_per_worker"),
    "deepfusion_ray_train_worker_count": (
        "validate", experiment("deepfusion"), ["deepfusion.run.ep_workers=4"],
        "deepfusion.run.ep_cpus_per_worker"),
    "deepfusion_task_gpus_without_gpus": (
        "run", experiment("deepfusion"), ["deepfusion.run.task_gpus=1"],
        "deepfusion.run.task_gpus"),
    "deepfusion_ray_train_on_gpus_without_gpus": (
        "validate", experiment("deepfusion"), ["deepfusion.run.use_gpu=true"],
        "deepfusion.run.use_gpu"),
    "deepfusion_device_pool_larger_than_the_node": (
        "run", experiment("deepfusion"), ["deepfusion.federation.num_actors=3"],
        "deepfusion.federation.cpus_per_actor"),
    "deepfusion_device_actors_on_gpus_without_gpus": (
        "validate", experiment("deepfusion"), ["deepfusion.federation.gpus_per_actor=0.5"],
        "deepfusion.federation.gpus_per_actor"),
    "deepfusion_sweep_trial_beside_its_device_pool": (
        "sweep", experiment("deepfusion", "sweep"), ["sweep.cpus_per_trial=2"],
        "sweep.cpus_per_trial"),
    "deepfusion_sweep_swept_pool_size": (
        "sweep", experiment("deepfusion", "sweep"),
        ["sweep.params.deepfusion.federation.num_actors={choice: [1, 2]}"],
        "sweep.params.deepfusion.federation.num_actors"),
    "prince_edge_servers_beside_the_pool": (
        "run", experiment("prince"), ["prince.training.server_cpus=1"],
        "prince.training.server_cpus"),
    "prince_edge_servers_on_gpus_without_gpus": (
        "validate", experiment("prince"), ["prince.training.server_gpus=0.5"],
        "prince.training.server_gpus"),
    "prince_pool_sized_to_the_node_leaves_no_cpu_for_servers": (
        "run", experiment("prince"), ["prince.federation.num_actors=0"],
        "prince.federation.num_actors"),
    "prince_device_actor_cpus": (
        "validate", experiment("prince"), ["prince.federation.cpus_per_actor=2"],
        "prince.federation.cpus_per_actor"),
    "prince_sweep_trial_gpus_without_gpus": (
        "sweep", experiment("prince", "sweep"), ["sweep.gpus_per_trial=1"], "sweep.gpus_per_trial"),
    "prince_sweep_trial_cpus": (
        "validate", experiment("prince", "sweep"), ["sweep.cpus_per_trial=4"],
        "sweep.cpus_per_trial"),
    "robustness_worker_cpus": (
        "run", experiment("robustness"), [robustness_models("workers: 1, num_cpus: 4")],
        "robustness.models[1].num_cpus"),
    "robustness_worker_count": (
        "validate", experiment("robustness"), [robustness_models("workers: 3, num_cpus: 1")],
        "robustness.models[1].num_cpus"),
    "robustness_worker_gpus_without_gpus": (
        "run", experiment("robustness"), [robustness_models("workers: 1, num_gpus: 1")],
        "robustness.models[1].num_gpus"),
    "robustness_sweep_trial_beside_its_worker": (
        "sweep", experiment("robustness", "sweep"),
        [robustness_models("workers: 1, num_cpus: 2", first_stored=False)],
        "sweep.cpus_per_trial"),
    "robustness_sweep_worker_alone_too_big": (
        "validate", experiment("robustness", "sweep"),
        [robustness_models("workers: 1, num_cpus: 3", first_stored=False)],
        "robustness.models[0].num_cpus"),
    "aeria_sweep_trial_cpus": (
        "sweep", experiment("aeria", "sweep"), ["sweep.cpus_per_trial=3"], "sweep.cpus_per_trial"),
    "aeria_sweep_fractional_trial_cpus": (
        "sweep", experiment("aeria", "sweep"), ["sweep.cpus_per_trial=2.5"],
        "sweep.cpus_per_trial"),
    "aeria_sweep_trial_gpus_without_gpus": (
        "validate", experiment("aeria", "sweep"), ["sweep.gpus_per_trial=0.5"],
        "sweep.gpus_per_trial"),
}


@pytest.mark.parametrize("name", sorted(RESOURCE_CASES))
def test_work_a_local_ray_can_never_schedule_exits_2_naming_the_knob(name, workdir, capsys):
    verb, config, overrides, key = RESOURCE_CASES[name]
    before = snapshot(workdir)
    code = main([verb, config, *store_and_state(workdir), *overrides])
    line = refused(code, capsys, workdir, before)
    assert f"config error at '{key}'" in line
    assert "at once" in line and "it would wait for ever" in line, line


# --------------------------------------------------------------------------- addresses, stores
# (argv, the text naming the key or flag). {tmp}: the working directory, holding `afile` and an
# empty `afolder`; {closed}: a loopback host:port nothing listens on. run/sweep/validate get the
# store and state_dir inside {tmp} before their own overrides.
ADDRESS_CASES = {
    "compare_unknown_scheme": (["compare", "x", "--tracking-uri", "foo://bar"], "--tracking-uri"),
    "compare_nothing_listening": (["compare", "x", "--tracking-uri", "http://{closed}"],
                                  "--tracking-uri"),
    "compare_port_not_a_number": (["compare", "x", "--tracking-uri", "http://host:notaport"],
                                  "--tracking-uri"),
    "compare_sqlite_in_missing_folder": (
        ["compare", "x", "--tracking-uri", "sqlite:////nonexistent/dir/x.db"], "--tracking-uri"),
    "compare_sqlite_new_file": (["compare", "x", "--tracking-uri", "sqlite:///{tmp}/new.db"],
                                "--tracking-uri"),
    "compare_sqlite_path_is_a_folder": (
        ["compare", "x", "--tracking-uri", "sqlite:///{tmp}/afolder"], "--tracking-uri"),
    "compare_sqlite_file_without_mlflow_tables": (
        ["compare", "x", "--tracking-uri", "sqlite:///{tmp}/afile"], "--tracking-uri"),
    "compare_plain_path_to_a_folder": (["compare", "x", "--tracking-uri", "{tmp}/afolder"],
                                       "--tracking-uri"),
    "compare_default_store_missing": (["compare", "aeria-quickstart"], "no MLflow store at"),
    "compare_out_is_a_folder": (["compare", "x", "--out", "{tmp}/afolder"], "--out"),
    "submit_address_without_port": (["submit", experiment("aeria"), "--address", "nonsense"],
                                    "--address"),
    "submit_port_not_a_number": (
        ["submit", experiment("aeria"), "--address", "http://host:notaport"], "--address"),
    "submit_port_out_of_range": (
        ["submit", experiment("aeria"), "--address", "http://127.0.0.1:99999"], "--address"),
    "submit_unknown_scheme": (["submit", experiment("aeria"), "--address", "ftp://x"],
                              "--address"),
    "submit_nothing_listening": (["submit", experiment("aeria"), "--address", "http://{closed}"],
                                 "--address"),
    "run_state_dir_is_a_file": (["run", experiment("aeria"), "state_dir={tmp}/afile"],
                                "'state_dir'"),
    "sweep_state_dir_below_a_file": (
        ["sweep", experiment("prince", "sweep"), "state_dir={tmp}/afile/state"], "'state_dir'"),
    "validate_state_dir_below_a_file": (
        ["validate", experiment("robustness"), "state_dir={tmp}/afile/state"], "'state_dir'"),
    "run_ray_address_with_a_scheme_ray_has_not": (
        ["run", experiment("deepfusion"), "ray.address='http://nonsense::'"], "'ray.address'"),
    "validate_ray_address_with_two_ports": (
        ["validate", experiment("prince"), "ray.address=host:port:extra"], "'ray.address'"),
    "sweep_ray_address_without_host": (["sweep", experiment("aeria", "sweep"), "ray.address=:123"],
                                       "'ray.address'"),
    "run_ray_address_nothing_listening": (["run", experiment("aeria"), "ray.address={closed}"],
                                          "'ray.address'"),
    "run_tracking_uri_unknown_scheme": (
        ["run", experiment("robustness"), "mlflow.tracking_uri=foo://bar"],
        "'mlflow.tracking_uri'"),
}


@pytest.mark.parametrize("name", sorted(ADDRESS_CASES))
def test_malformed_or_unreachable_address_store_or_state_dir_exits_2_naming_it(name, workdir,
                                                                                 capsys):
    template, names = ADDRESS_CASES[name]
    (workdir / "afile").write_text("not a store\n")
    (workdir / "afolder").mkdir()
    argv = [a.format(tmp=workdir, closed=f"127.0.0.1:{free_port()}") for a in template]
    if argv[0] in ("run", "sweep", "validate"):
        argv[2:2] = store_and_state(workdir)
    before = snapshot(workdir)
    line = refused(main(argv), capsys, workdir, before)
    assert names in line, line


def test_malformed_ray_address_in_the_environment_names_the_variable(workdir, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")
    before = snapshot(workdir)
    line = refused(main(["run", experiment("robustness"), *store_and_state(workdir)]),
                   capsys, workdir, before)
    assert line.startswith("error: RAY_ADDRESS: 'nonsense' is not a Ray address"), line


def test_compare_of_an_experiment_the_store_lacks_names_the_known_ones(workdir, capsys):
    from mlflow import MlflowClient

    db = workdir / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("aeria-quickstart")
    before = snapshot(workdir)
    line = refused(main(["compare", "aeria-quickstrat", "--tracking-uri", f"sqlite:///{db}"]),
                   capsys, workdir, before)
    assert "no experiment 'aeria-quickstrat'" in line and "did you mean 'aeria-quickstart'" in line


# --------------------------------------------------------------------------- not over-eager
@pytest.mark.parametrize("config, overrides", [
    (experiment("deepfusion"), []),                                      # 2 x 1 CPU on 2
    (experiment("prince"), []),                                          # 1 + 4 x 0.25 CPU on 2
    (experiment("robustness"), [robustness_models("workers: 1, num_cpus: 2")]),
    (experiment("deepfusion", "sweep"), []),                             # trial 1 + pool 1 on 2
    (experiment("aeria", "sweep"), ["sweep.cpus_per_trial=2"]),
    (experiment("deepfusion"), ["ray.num_cpus=4", "deepfusion.run.ep_cpus_per_worker=2"]),
    (experiment("prince"), ["ray.num_gpus=2", "prince.training.server_gpus=0.5"]),
], ids=["deepfusion", "prince", "robustness", "deepfusion_sweep", "aeria_sweep",
        "deepfusion_more_cpus", "prince_gpu_shares"])
def test_work_that_exactly_fits_the_local_ray_validates(config, overrides, workdir, capsys):
    assert main(["validate", config, *store_and_state(workdir), *overrides]) == 0, \
        capsys.readouterr().err
    assert not (workdir / "state").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize("where", ["config", "environment"])
def test_with_a_cluster_address_local_resources_are_not_checked(where, workdir, capsys,
                                                                  monkeypatch):
    """A joined cluster has its own resources (an autoscaler may add them): validate accepts."""
    too_big = ["deepfusion.run.ep_cpus_per_worker=8", "deepfusion.run.task_gpus=1"]
    if where == "config":
        too_big.append("ray.address=10.0.0.1:6379")
    else:
        monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.1:10001")
    assert main(["validate", experiment("deepfusion"), *store_and_state(workdir), *too_big]) == 0, \
        capsys.readouterr().err


@pytest.mark.slow
def test_a_ray_this_process_started_is_judged_by_its_own_resources(local_ray, workdir, capsys):
    """`run` reuses a Ray the process already runs (2 CPUs here), whatever ray.num_cpus says."""
    before = snapshot(workdir)
    line = refused(main(["run", experiment("deepfusion"), *store_and_state(workdir),
                         "ray.num_cpus=8", "deepfusion.run.ep_cpus_per_worker=2"]),
                   capsys, workdir, before)
    assert "config error at 'deepfusion.run.ep_cpus_per_worker'" in line
    assert "the Ray this process started has 2" in line, line


# --------------------------------------------------------------------------- helpers
def store_and_state(tmp: Path) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"state_dir={tmp}/state"]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its size and modification time: what 'nothing written'
    compares."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


def refused(code: int, capsys, workdir: Path, before: dict) -> str:
    """The one stderr line of a refusal, after checking the refusal itself: exit 2, one line
    `error: ...`, no traceback, Ray never started, the working directory untouched."""
    import ray

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err
    assert ray.is_initialized() == RAY_WAS_UP[0] and RAY_STARTS == [], "Ray started on bad input"
    assert snapshot(workdir) == before, "bad input wrote to the working directory"
    return lines[0]


RAY_STARTS: list[str] = []
RAY_WAS_UP = [False]  # whether an earlier test of the session left its Ray running


@pytest.fixture(autouse=True)
def starting_ray_fails_fast(monkeypatch):
    """A regression would start (or reuse) Ray and then wait for ever for resources: record
    the start and refuse it instead, so the test fails in a second. The CLI's checks, the
    config loader and MLflow run unchanged."""
    import ray

    RAY_STARTS.clear()
    RAY_WAS_UP[0] = ray.is_initialized()
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)

    refuse_starts(monkeypatch, RAY_STARTS, mlflow_runs=False)
