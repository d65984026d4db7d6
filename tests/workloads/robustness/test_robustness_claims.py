"""The claims `orchestrator reproduce robustness` checks, read from result rows by model name."""
from __future__ import annotations

import pytest

from orchestrator.claims import check
from workloads.robustness.claims import (ADVGLUE, CHATGPT, CHATGPT_SUBSET, CLAIMS, OPEN_MODEL,
                                         asr_below_chance, asr_below_open_model,
                                         flipkart_above_chance)
from workloads.robustness.paper_tables import CHATGPT_RECOMPUTED
from workloads.robustness.tasks import TASKS


def rows_of(model: str, seed: int, asr: dict[str, float], f1: float | None = None) -> list[dict]:
    rows = [{"seed": seed, "model": model, "task": t, "asr": asr[t]} for t in ADVGLUE]
    return rows + ([{"seed": seed, "model": model, "task": "flipkart", "macro_f1": f1}]
                   if f1 is not None else [])


STORED = {t: CHATGPT_RECOMPUTED[TASKS[t].column] for t in ADVGLUE}


def test_the_stored_chatgpt_row_beats_chance_by_what_the_paper_reports():
    rows = [r for s in (0, 1, 2) for r in rows_of(CHATGPT, s, STORED,
                                                   CHATGPT_RECOMPUTED["Flipkart"])]
    # chance: 50, 50, 66.7, 50, 50 -> 53.34; the stored answers: 29.6 (paper 29.86)
    assert asr_below_chance(rows) == pytest.approx([29.6 - 53.34] * 3)
    assert flipkart_above_chance(rows) == pytest.approx([41.2] * 3)
    table = {c["claim"]: c for c in check(CLAIMS, rows)}
    assert [table[c.what]["verdict"] for c in (CLAIMS[0], CLAIMS[2])] == ["reproduced"] * 2
    assert CLAIMS[1].what not in table  # no open model in these rows: that claim is left out


def test_the_open_model_claim_pairs_chatgpt_and_the_open_model_seed_by_seed():
    rows = (rows_of(CHATGPT_SUBSET, 0, dict.fromkeys(ADVGLUE, 30.0))
            + rows_of(OPEN_MODEL, 0, dict.fromkeys(ADVGLUE, 60.0))
            + rows_of(CHATGPT_SUBSET, 1, dict.fromkeys(ADVGLUE, 40.0))
            + rows_of(OPEN_MODEL, 1, dict.fromkeys(ADVGLUE, 45.0))
            + rows_of(OPEN_MODEL, 2, dict.fromkeys(ADVGLUE, 45.0)))  # seed 2: no ChatGPT
    assert asr_below_open_model(rows) == [-30.0, -5.0]
    single = [{k: v for k, v in r.items() if k != "seed"} for r in rows[:10]]
    assert asr_below_open_model(single) == [-30.0]  # a one-seed run has no seed column
