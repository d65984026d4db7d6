"""The robustness quickstart end to end (Ray, MLflow): the paper's ChatGPT row regenerated from the
authors' stored answers, and a local model (tiny, random) evaluated on every task of the paper.
"""
from __future__ import annotations

import csv
import io

import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import KIND_TAG, PARENT_TAG
from tests.conftest import REPO, store
from workloads.robustness.paper_tables import CHATGPT_RECOMPUTED
from workloads.robustness.stored import STORED_FILES
from workloads.robustness.tasks import TASKS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
QUICKSTART = str(REPO / "experiments" / "robustness" / "quickstart.yaml")
# tiny-nli wants both CPUs of the test's Ray: it can only start once tiny's worker is released
TINY = ['robustness.models=[{name: ChatGPT, kind: stored}, {name: tiny, kind: generative, '
        'path: tiny, max_examples: 2, batch_size: 2}, {name: tiny-nli, kind: zero_shot, '
        'path: tiny, max_examples: 2, num_cpus: 2, tasks: [advglue_rte, anli]}]',
        "robustness.decoding.translation_max_new_tokens=8", "mlflow.experiment=robustness-e2e"]


def _table(client: MlflowClient, run_id: str, name: str) -> dict[tuple[str, str], dict]:
    text = client.download_artifacts(run_id, name)
    with open(text, encoding="utf-8") as f:
        return {(r["model"], r["source"]): r for r in csv.DictReader(f)}


def test_quickstart_regenerates_the_chatgpt_row_and_runs_a_local_model_on_every_task(workdir):
    assert main(["run", QUICKSTART, *TINY]) == 0
    client = MlflowClient(store())
    exp = client.get_experiment_by_name("robustness-e2e")
    runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get(KIND_TAG) == "run"]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    assert set(children) == ({f"ChatGPT/{t}" for t in STORED_FILES}
                             | {f"tiny/{t}" for t in TASKS}
                             | {"tiny-nli/advglue_rte", "tiny-nli/anli"}), "one per (model, task)"
    assert all(c.info.status == "FINISHED" for c in children.values())

    chatgpt = {TASKS[t].column: children[f"ChatGPT/{t}"].data.metrics[TASKS[t].metric]
               for t in STORED_FILES}
    assert {k: round(v, 1) for k, v in chatgpt.items()} == CHATGPT_RECOMPUTED
    assert CHATGPT_RECOMPUTED == {"SST-2": 39.9, "QQP": 17.9, "MNLI": 29.8, "QNLI": 34.5,
                                  "RTE": 25.9, "Flipkart": 61.2}
    for t in TASKS:
        metrics = children[f"tiny/{t}"].data.metrics
        assert metrics["n"] == metrics["model_calls"] == 2
        assert ("bleu" if TASKS[t].kind == "translation" else TASKS[t].metric) in metrics

    adversarial = _table(client, parent.info.run_id, "table_adversarial.csv")
    ours, paper = adversarial[("ChatGPT", "ours")], adversarial[("ChatGPT", "paper")]
    assert [float(ours[c]) for c in ("SST-2", "QQP", "MNLI", "QNLI", "RTE")] == \
        [39.9, 17.9, 29.8, 34.5, 25.9]
    assert float(paper["MNLI"]) == 32.2
    assert ("tiny", "ours") in adversarial and ("tiny-nli", "ours") in adversarial
    assert float(_table(client, parent.info.run_id, "table_ood.csv")[("ChatGPT", "ours")]
                 ["Flipkart"]) == 61.2
    assert ("tiny", "ours") in _table(client, parent.info.run_id, "table_translation.csv")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    for name in ("adversarial", "translation", "ood"):
        assert {f"table_{name}.csv", f"table_{name}.png"} <= artifacts
        png = client.download_artifacts(parent.info.run_id, f"table_{name}.png")
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    sst2 = children["ChatGPT/advglue_sst2"].info.run_id
    assert {"predictions.csv", "bad_cases.csv"} <= {a.path for a in client.list_artifacts(sst2)}
    bad = list(csv.DictReader(io.StringIO(open(client.download_artifacts(
        sst2, "bad_cases.csv"), encoding="utf-8").read())))
    assert len(bad) == 59 and all(r["correct"] == "False" for r in bad)  # 39.9% of 148
