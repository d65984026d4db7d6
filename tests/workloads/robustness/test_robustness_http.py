"""The HTTP backend against a real OpenAI-compatible server (`transformers serve`, 127.0.0.1):
an evaluation end to end with no trace of the API key anywhere, and a killed evaluation that
resumes without sending any example twice (counted at the server) to the uninterrupted metrics.
"""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import REPO, runs_by_parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
QUICKSTART = str(REPO / "experiments" / "robustness" / "quickstart.yaml")
KEY_ENV = "ROBUSTNESS_TEST_API_KEY"


def _overrides(server, experiment: str, tasks: str, n: int, key_env: str = "") -> list[str]:
    model = (f'{{name: served, kind: http, base_url: "{server.base_url}", model: "{server.model}",'
             f' api_key_env: "{key_env}", max_examples: {n}, batch_size: 3, workers: 1,'
             f' concurrency: 3}}')
    return [f"robustness.models=[{model}]", f"robustness.tasks={tasks}",
            "robustness.decoding.translation_max_new_tokens=8", f"mlflow.experiment={experiment}"]


def _finals(children) -> dict:
    keep = ("asr", "accuracy", "unparsed", "bleu", "gleu", "meteor")
    return {c.info.run_name: {k: v for k, v in c.data.metrics.items() if k in keep}
            for c in children}


def test_http_backend_evaluates_through_a_real_server_and_the_key_appears_nowhere(
        openai_server, workdir, monkeypatch, caplog, capfd):
    sentinel = f"sk-sentinel-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, sentinel)
    caplog.set_level(logging.DEBUG)
    before = openai_server.requests()
    args = _overrides(openai_server, "robustness-http", "[advglue_rte,advglue_t]", 4, KEY_ENV)
    assert main(["-v", "run", QUICKSTART, *args]) == 0

    assert openai_server.wait_for_requests(before + 8) - before == 8, "one request per example"
    client, [(parent, children)] = runs_by_parent("robustness-http")
    assert {c.info.run_name for c in children} == {"served/advglue_rte", "served/advglue_t"}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.metrics["model_calls"] == 4
    rte = next(c for c in children if c.info.run_name == "served/advglue_rte")
    assert {"asr", "accuracy", "unparsed"} <= set(rte.data.metrics)
    assert rte.data.params["model.api_key_env"] == "***", "even the variable's name is masked"

    # the key: not in any param, tag or metric name, nor in any file the run left behind
    for run in [parent, *children]:
        texts = [*run.data.params.items(), *run.data.tags.items(), *run.data.metrics]
        assert not any(sentinel in str(t) for t in texts), run.info.run_name
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "predictions.csv" for p in files) and any(p.suffix == ".jsonl"
                                                                   for p in files)
    leaked = [str(p) for p in files if sentinel.encode() in p.read_bytes()]
    assert not leaked, f"the API key leaked into {leaked}"
    out, err = capfd.readouterr()
    assert sentinel not in out + err + caplog.text
    worker_logs = [p for p in _ray_logs().rglob("*") if p.is_file()]  # the actors' stdout/stderr
    leaked = [p.name for p in worker_logs if sentinel.encode() in p.read_bytes()]
    assert worker_logs and not leaked, f"the API key leaked into Ray's logs {leaked}"


def _ray_logs() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path())


def test_a_killed_http_evaluation_resumes_without_repeating_a_call(openai_server, workdir,
                                                                   monkeypatch):
    import workloads.robustness.evaluate as evaluate

    # 6 examples of each task in batches of 3, one worker: 4 batches in all
    args = _overrides(openai_server, "robustness-resume", "[advglue_sst2,advglue_t]", 6)
    real_append, appended = evaluate.append_predictions, []

    def killed_after_two_batches(path, records):
        real_append(path, records)
        appended.append(len(records))
        if len(appended) == 2:
            raise RuntimeError("killed after two batches")

    start = openai_server.requests()
    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "append_predictions", killed_after_two_batches)
        assert main(["run", QUICKSTART, *args]) == 1
    assert openai_server.wait_for_requests(start + 6) - start == 6
    assert main(["run", QUICKSTART, *args, "--resume"]) == 0
    assert openai_server.wait_for_requests(start + 12) - start == 12, "no example sent twice"

    _, runs = runs_by_parent("robustness-resume")
    assert len(runs) == 1, "the resumed run is the killed one, reopened"
    parent, children = runs[0]
    assert parent.info.status == "FINISHED"
    calls = {c.info.run_name: (c.data.metrics["model_calls"], c.data.metrics["resumed"])
             for c in children}
    assert calls == {"served/advglue_sst2": (0, 6), "served/advglue_t": (6, 0)}
    resumed = _finals(children)

    assert main(["run", QUICKSTART, *args]) == 0  # a fresh run of the same config
    _, runs = runs_by_parent("robustness-resume")
    assert _finals(runs[-1][1]) == resumed
