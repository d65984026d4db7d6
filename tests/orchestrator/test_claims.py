"""A paper's claims as data: the interval over seeds and the verdict it earns."""
import math

import pytest

from orchestrator.claims import (Claim, check, interval, markdown, paired_difference,
                                 relative_difference, seed_summary)


def claim(paper_value=0.2, higher=True, null=0.0):
    return Claim("B beats A", f"{paper_value}", paper_value, lambda rows: rows, higher, null)


def test_the_interval_is_the_student_t_interval_of_the_mean():
    mean, low, high = interval([1.0, 2.0, 3.0])  # sd 1, n 3, t(2) = 4.303
    assert mean == 2.0
    assert (low, high) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))


def test_one_seed_has_no_interval_and_cannot_be_called_reproduced():
    (row,) = check([claim()], [0.5])
    assert math.isnan(row["ci95_low"]) and row["verdict"] == "same direction"
    assert "n/a (one seed)" in markdown([row])


@pytest.mark.parametrize("per_seed, verdict", [
    ([0.19, 0.21, 0.20], "reproduced"),        # clear of zero, and as strong as the paper
    ([0.04, 0.05, 0.06], "same direction"),    # clear of zero, but far weaker than the paper
    ([-0.1, 0.2, 0.05], "same direction"),     # positive on average, not told apart from zero
    ([-0.04, -0.05, -0.06], "not reproduced"),  # the other way
])
def test_the_verdict_reads_the_interval_against_no_effect_and_the_papers_figure(per_seed, verdict):
    assert check([claim(0.2)], per_seed)[0]["verdict"] == verdict


def test_a_claim_that_a_value_falls_is_read_the_other_way_round():
    lower_latency = claim(paper_value=0.5, higher=False, null=1.0)  # a ratio: 0.5x the baseline
    assert check([lower_latency], [0.48, 0.5, 0.52])[0]["verdict"] == "reproduced"
    assert check([lower_latency], [1.2, 1.3, 1.1])[0]["verdict"] == "not reproduced"


def test_paired_difference_pairs_the_methods_seed_by_seed_and_skips_unpaired_seeds():
    rows = [{"method": "a", "seed": 0, "acc": 0.5}, {"method": "b", "seed": 0, "acc": 0.7},
            {"method": "a", "seed": 1, "acc": 0.6}, {"method": "b", "seed": 1, "acc": 0.6},
            {"method": "b", "seed": 2, "acc": 0.9}]
    assert paired_difference("acc", "b", "a")(rows) == pytest.approx([0.2, 0.0])


def test_relative_difference_is_in_percent_of_the_baseline():
    rows = [{"method": "a", "bytes": 200.0}, {"method": "b", "bytes": 58.0}]
    assert relative_difference("bytes", "b", "a")(rows) == pytest.approx([-71.0])


def test_a_claim_that_cannot_be_computed_is_undetermined_and_never_fails_the_run():
    rows = [{"method": "a", "bytes": 0.0}, {"method": "b", "bytes": 5.0}]
    (row,) = check([Claim("b saves bytes", "-71%", -71, relative_difference("bytes", "b", "a"),
                          higher=False)], rows)
    assert row["verdict"].startswith("undetermined (ZeroDivisionError")
    assert "| n/a |" in markdown([row])


def test_the_seed_summary_gives_each_methods_interval_and_its_paired_difference():
    rows = [{"seed": s, "method": m, "loss": v, "note": 1.0}
            for s, (a, b) in enumerate([(1.0, 3.0), (2.0, 3.5), (3.0, 5.5)])
            for m, v in (("ours", a), ("base", b))]
    table = {(r["method"], r["metric"]): r for r in seed_summary(rows, reference="ours")}
    ours, base = table["ours", "loss"], table["base", "loss"]
    assert ours["mean"] == 2.0 and ours["seeds"] == 3 and "minus_ours" not in ours
    mean, low, high = interval([2.0, 1.5, 2.5])  # base - ours, seed by seed
    assert (base["minus_ours"], base["diff_ci95_low"], base["diff_ci95_high"]) == \
        pytest.approx((mean, low, high))
    assert ("ours", "note") in table and len(table) == 4


def test_rows_per_method_and_tenant_are_summarised_apart_and_paired_tenant_by_tenant():
    rows = [{"seed": s, "method": m, "tenant": t, "time": v}
            for s in (0, 1) for m, t, v in (("ours", "a", 1.0 + s), ("ours", "b", 100.0 + s),
                                            ("base", "a", 3.0 + s), ("base", "b", 90.0 + s))]
    table = {(r["method"], r["tenant"]): r for r in seed_summary(rows, reference="ours")}
    assert table["ours", "b"]["mean"] == 100.5 and table["ours", "a"]["mean"] == 1.5
    assert table["base", "a"]["minus_ours"] == 2.0 and table["base", "b"]["minus_ours"] == -10.0
