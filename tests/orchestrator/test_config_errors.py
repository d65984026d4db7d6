"""Bad input gets one clear line naming the key, exit status 2, and nothing starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import QUICKSTART, refuse_starts

SWEEP = str(Path(QUICKSTART).with_name("sweep.yaml"))

# (config file or None for the quickstart, overrides, text the one-line message must contain)
CASES = {
    "unknown_top_level_key": (None, ["seeed=1"], ["'seeed'", "unknown key", "did you mean 'seed'"]),
    "unknown_nested_key": (None, ["ray.num_cpu=2"], ["'ray.num_cpu'", "did you mean 'num_cpus'"]),
    "unknown_workload_key": (None, ["aeria.num_user=10"], ["'aeria.num_user'", "did you mean 'num_users'"]),
    "string_for_int": (None, ["seed=abc"], ["'seed'", "expected an integer", "'abc'"]),
    "float_for_int": (None, ["ray.num_cpus=2.5"], ["'ray.num_cpus'", "expected an integer"]),
    "string_for_bool": (None, ["ray.include_dashboard=maybe"], ["'ray.include_dashboard'", "true or false"]),
    "list_for_number": (None, ["aeria.reserve_price=[1,2]"], ["'aeria.reserve_price'", "expected a number"]),
    "zero_cpus": (None, ["ray.num_cpus=0"], ["'ray.num_cpus'", "out of range", ">= 1"]),
    "negative_seed": (None, ["seed=-1"], ["'seed'", "out of range"]),
    "consensus_base_not_above_one": (None, ["aeria.consensus_base=1.0"], ["'aeria.consensus_base'", "> 1"]),
    "unknown_mechanism": (None, ["aeria.mechanisms=[aeria,vcgg]"], ["'aeria.mechanisms[1]'", "choose one of"]),
    "missing_profile_file": (None, ["aeria.profiles=/no/such/profiles.json"], ["'aeria.profiles'", "no such file"]),
    "unknown_workload": (None, ["workload=aeri"], ["'workload'", "unknown workload", "did you mean 'aeria'"]),
    "section_not_a_mapping": (None, ["ray=5"], ["'ray'", "expected a mapping"]),
    "override_without_equals": (None, ["aeria.num_users"], ["key=value"]),
    "bad_sweep_mode": (None, ["sweep.mode=maximize"], ["'sweep.mode'", "choose one of: max, min"]),
    "missing_store_folder": (None, ["mlflow.tracking_uri=sqlite:///no/such/dir/m.db"], ["'mlflow.tracking_uri'", "does not exist"]),
    "sweep_unknown_param": (SWEEP, ["sweep.params.aeria.reserv_price={uniform: [0,1]}"], ["reserv_price", "did you mean 'aeria.reserve_price'"]),
    "sweep_unknown_kind": (SWEEP, ["sweep.params.aeria.reserve_price={normal: [0,1]}"], ["sweep.params.aeria.reserve_price", "bad search spec"]),
    "sweep_low_not_below_high": (SWEEP, ["sweep.params.aeria.reserve_price={uniform: [2,1]}"], ["must be below high"]),
    "sweep_loguniform_nonpositive": (SWEEP, ["sweep.params.aeria.reserve_price={loguniform: [0,1]}"], ["loguniform needs low > 0"]),
    "sweep_uniform_on_integer": (SWEEP, ["sweep.params.aeria.num_users={uniform: [10,20]}"], ["is an integer", "randint"]),
    "sweep_grid_value_out_of_range": (SWEEP, ["sweep.params.aeria.consensus_base={grid: [0.5,2]}"], ["consensus_base.grid[0]", "> 1"]),
    "sweep_batch_needs_random_search": (SWEEP, ["sweep.search_alg=optuna", "sweep.batch_size=10"], ["'sweep.batch_size'", "search_alg 'random'"]),
    "sweep_without_metric": (SWEEP, ["sweep.metric=''"], ["'sweep.metric'", "missing"]),
    "sweep_unknown_metric": (SWEEP, ["sweep.metric=revenu_aeria"], ["'sweep.metric'", "did you mean 'revenue_aeria'"]),
    "sweep_value_breaks_cross_field_rule": (SWEEP, ["sweep.params.aeria.users.deadline_ms_low={uniform: [50, 300]}"], ["sweep.params.aeria.users.deadline_ms_low", "300"]),
    "unparsable_override_value": (None, ["aeria.user_counts=[1,2"], ["'aeria.user_counts'", "cannot parse"]),
    "override_flow_map_without_space": (SWEEP, ["sweep.params.aeria.reserve_price={uniform:[0,1]}"], ["cannot parse", "a space after ':'"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_config_exits_2_with_one_line_naming_the_key(name, workdir, capsys):
    path, overrides, expected = CASES[name]
    code = main(["run", path or str(QUICKSTART), *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    _assert_nothing_started(workdir)


def _write(workdir: Path, text: str) -> str:
    path = workdir / "bad.yaml"
    path.write_text(text)
    return str(path)


FILE_CASES = {
    "malformed_yaml": ("workload: aeria\nray: {num_cpus: 2\n", ["malformed YAML", "line"]),
    "yaml_is_a_list": ("- workload\n- aeria\n", ["must hold a mapping"]),
    "missing_workload": ("seed: 1\n", ["'workload'", "missing required key", "aeria"]),
    "bad_interpolation": ("workload: aeria\nseed: ${nope}\n", ["nope"]),
}


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_bad_yaml_file_exits_2_with_one_line(name, workdir, capsys):
    text, expected = FILE_CASES[name]
    code = main(["run", _write(workdir, text)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"
    _assert_nothing_started(workdir)


def test_missing_config_file_exits_2(workdir, capsys):
    assert main(["validate", "experiments/nope.yaml"]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_a_valid_run_does_try_to_start_so_the_guard_can_fail(workdir):
    assert main(["run", str(QUICKSTART)]) == 1
    assert STARTED == ["parent_run"]


def test_valid_config_validates(workdir, capsys):
    assert main(["validate", str(QUICKSTART), "aeria.num_users=500"]) == 0
    assert "ok" in capsys.readouterr().out


def _assert_nothing_started(workdir: Path) -> None:
    assert STARTED == [], f"started on bad input: {STARTED}"
    assert not (workdir / "mlflow.db").exists(), "no MLflow store may be created on bad input"


STARTED: list[str] = []


@pytest.fixture(autouse=True)
def forbid_starting_anything(monkeypatch):
    """Bad input must fail before Ray or MLflow are touched: record any attempt, and refuse it."""
    STARTED.clear()
    refuse_starts(monkeypatch, STARTED)
