"""What the CLI hands back: compare's run selection and formats, tables that never crop numbers,
the UI link, --version, validate --print and --resume with nothing to resume."""
from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from mlflow import MlflowClient
from rich.console import Console

from orchestrator import cli
from orchestrator.config import load_experiment
from orchestrator.tracking import parent_run, runs_url, ui_command
from tests.conftest import QUICKSTART, store


def _parents(statuses: list[str]) -> list[str]:
    """One parent per status, oldest first, each with a child whose revenue is its index."""
    cfg = load_experiment(QUICKSTART, ["mlflow.experiment=unit"])
    ids = []
    for i, status in enumerate(statuses):
        with parent_run(cfg, str(QUICKSTART), "run", overrides=[f"seed={i}"]) as parent:
            with parent.child(f"child{i}") as child:
                child.log_metrics({"revenue": float(i)})
        if status != "FINISHED":
            MlflowClient(store()).set_terminated(parent.run_id, status)
        ids.append(parent.run_id)
    return ids


def _compare(*args: str) -> int:
    return cli.main(["compare", "unit", "--tracking-uri", store(), *args])


def test_compare_skips_newer_failed_parents_and_says_so(workdir, capsys):
    _parents(["FINISHED", "FAILED", "KILLED"])
    assert _compare("--format", "json") == 0
    out, err = capsys.readouterr()
    assert [r["run"] for r in json.loads(out)["children"]] == ["child0"]
    assert "skipped 2 newer parent run(s) not FINISHED" in err


def test_compare_picks_a_parent_by_id_status_or_tag(workdir, capsys):
    ids = _parents(["FINISHED", "FAILED", "FINISHED"])
    assert _compare("--run-id", ids[1], "--format", "csv") == 0
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out)))[0]["run"] == "child1"
    assert _compare("--status", "FAILED", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["parent"]["run_id"] == ids[1]
    assert _compare("--tag", "orchestrator.overrides=seed=0", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["parent"]["run_id"] == ids[0]
    assert _compare("--tag", "mlflow.note.content=Made by `orchestrator run "
                    f"{QUICKSTART} seed=2`", "--format", "json") == 0  # quotes, brackets: as is
    assert json.loads(capsys.readouterr().out)["parent"]["run_id"] == ids[2]
    assert _compare("--run-id", "nope") == 2
    assert "--run-id nope: no parent run" in capsys.readouterr().err


def test_json_output_is_strict_json_with_null_for_nan_and_infinity(workdir, capsys):
    cfg = load_experiment(QUICKSTART, ["mlflow.experiment=unit"])
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        with parent.child("odd") as child:
            child.log_metrics({"gap": float("nan"), "ok": 1.0})  # MLflow stores inf as max
    assert _compare("--format", "json") == 0
    (row,) = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)["children"]
    assert row["gap"] is None and row["ok"] == 1.0
    assert cli._json({"x": float("inf")}) == '{\n "x": null\n}'


def test_compare_markdown_is_a_table_with_every_child(workdir, capsys):
    _parents(["FINISHED"])
    assert _compare("--format", "markdown") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | status |") and lines[2].startswith("| child0 |")


def test_a_table_wider_than_the_terminal_prints_long_and_keeps_every_digit(monkeypatch):
    rows = [{"run": "aeria seed 0", **{f"revenue_at_{n}_users": 123456.789 + n
                                       for n in range(12)}}]
    terminal = Console(width=80, force_terminal=True, color_system=None)
    monkeypatch.setattr(cli, "console", terminal)
    with terminal.capture() as captured:
        cli._print_table(rows)
    text = captured.get()
    assert text.count("1.235e+05") == 12 and "…" not in text
    assert max(map(len, text.splitlines())) <= 80


def test_text_columns_fold_but_are_never_squeezed_away_beside_whole_numbers(monkeypatch):
    """prince's results in an 80-column terminal: the numbers fill most of the width, yet the
    method and tenant names stay readable (rich alone shrank them to zero characters)."""
    rows = [{"method": method, "tenant": tenant, "time_to_target": 123.456, "price": 1.6,
             "devices": 3, "payment": 49.94}
            for method in ("prince", "random_assignment") for tenant in ("vit", "whisper")]
    terminal = Console(width=64, force_terminal=True, color_system=None)
    monkeypatch.setattr(cli, "console", terminal)
    with terminal.capture() as captured:
        cli._print_table(rows)
    text = captured.get()
    assert "whisper" in text and "prince" in text and "random_a" in text
    assert max(map(len, text.splitlines())) <= 64


def test_the_ui_command_is_the_light_loopback_one_and_the_link_opens_the_runs():
    command = ui_command("sqlite:///mlflow.db")
    assert "--host 127.0.0.1" in command and "--workers 1" in command
    assert command.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui")
    assert runs_url("3") == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert runs_url("3", "abc") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_a_parent_run_describes_the_command_that_made_it_with_secrets_masked(workdir):
    cfg = load_experiment(QUICKSTART, ["mlflow.experiment=unit"])
    with parent_run(cfg, "experiments/aeria/quickstart.yaml", "run",
                    overrides=["seed=3", "x.api_key=sk-1"]) as parent:
        pass
    note = MlflowClient(store()).get_run(parent.run_id).data.tags["mlflow.note.content"]
    assert note == "Made by `orchestrator run experiments/aeria/quickstart.yaml seed=3 " \
                   "'x.api_key=***'`"


def test_version_names_the_installed_package(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("orchestrator 0.")


def test_validate_print_writes_the_resolved_config_with_its_defaults(workdir, capsys):
    assert cli.main(["validate", str(QUICKSTART), "seed=7", "--print"]) == 0
    out, err = capsys.readouterr()
    resolved = yaml.safe_load(out)
    assert resolved["seed"] == 7 and resolved["workload"] == "aeria"
    assert "num_users" in resolved["aeria"] and "ok: " in err


def test_resume_with_nothing_to_resume_is_bad_input_unless_asked_to_start(workdir, capsys):
    assert cli.main(["run", str(QUICKSTART), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "--resume-or-start" in err
    assert not (workdir / "mlflow.db").exists() or \
        not MlflowClient(store()).search_experiments(filter_string="name = 'aeria-quickstart'")


def test_keys_lists_every_knob_with_its_type_default_rules_and_help(capsys):
    assert cli.main(["keys", "deepfusion", "--format", "json"]) == 0
    keys = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    steps = keys["deepfusion.moe.steps"]
    assert steps["type"] == "int" and steps["rules"].startswith(">=") and steps["help"]
    assert keys["ray.address"]["type"] == "str | null" and keys["seed"]["default"] == 0
    assert cli.main(["keys", "deepfusin"]) == 2
    assert "did you mean 'deepfusion'" in capsys.readouterr().err


def test_an_output_path_in_a_missing_folder_is_bad_input_before_anything_runs(workdir, capsys):
    assert cli.main(["run", str(QUICKSTART), "--output", "nowhere/summary.json"]) == 2
    assert "--output nowhere/summary.json: folder nowhere does not exist" in \
        capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()
