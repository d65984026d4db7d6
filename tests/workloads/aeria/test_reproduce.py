"""`orchestrator reproduce aeria`, tiny: tuning with one budget for all, markets at two load levels,
arrivals over time, the claims per load level and the multi-seed summary on the parent run."""
from __future__ import annotations

import csv

import pytest
from orchestrator.cli import main
from tests.conftest import runs_by_parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
TINY = ["aeria.user_counts=[200,6000]", "aeria.num_seeds=3", "aeria.tune_samples=2",
        "aeria.tune_seeds=1", "aeria.num_users=6000", "aeria.arrival_windows=3",
        "aeria.property_users=80", "aeria.property_probes=2", "mlflow.experiment=aeria-rep"]


def test_reproduce_tunes_every_mechanism_and_checks_the_claim_per_load_level(workdir, capsys):
    assert main(["reproduce", "aeria", *TINY]) == 0
    out = capsys.readouterr().out
    assert "mean over 3 seeds" in out and "over capacity" in out
    client, [(parent, children)] = runs_by_parent("aeria-rep")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tuning.csv", "claims.md", "seeds_summary.csv", "arrivals_over_time.png",
            "utilisation_vs_users.png"} <= artifacts
    folder = client.download_artifacts(parent.info.run_id, "", str(workdir / "a"))
    tuning = list(csv.DictReader(open(f"{folder}/tuning.csv")))
    tried = {}
    for row in tuning:
        tried.setdefault((row["mechanism"], row["num_users"]), []).append(row["chosen"])
    # the same budget for every mechanism with knobs; exactly one setting chosen per size
    assert {len(v) for (m, _), v in tried.items() if not m.startswith("oracle")} == {2}
    assert all(v.count("True") == 1 for v in tried.values())
    claims = open(f"{folder}/claims.md").read()
    assert "under capacity" in claims and "over capacity" in claims
    aeria = next(c for c in children if c.info.run_name == "aeria")
    assert "tuned_consensus_base" in aeria.data.metrics and "truthful" in aeria.data.metrics
    assert "arrivals.csv" in {a.path for a in client.list_artifacts(aeria.info.run_id)}
