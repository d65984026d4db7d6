"""A paper's claims as data, checked against a run's results.

A workload declares what its paper claims (`Workload.claims`): the claim in words, the paper's
figure, and how to read one value per seed out of the run's result rows (usually a paired
difference or ratio: the proposed method against a baseline on the same seed). After `run`, the
core writes `claims.csv` and `claims.md` to the parent run: the paper's figure, ours (the mean
over seeds), its 95% interval (Student t over seeds), and a verdict:

* reproduced:      the interval excludes "no effect" on the claimed side and reaches the paper's
                   figure (the effect is there and as strong as claimed);
* same direction:  our mean is on the claimed side of "no effect", but weaker than the paper's
                   figure or not distinguishable from no effect;
* not reproduced:  our mean is at or on the other side of "no effect".

`orchestrator reproduce WORKLOAD` runs `experiments/<workload>/reproduce.yaml` and prints the
table. A result that contradicts the paper is a result: it is reported as measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

Rows = Sequence[dict]


@dataclass(frozen=True)
class Claim:
    what: str                                # "FedProx beats FedAvg under heterogeneity"
    paper: str                               # the paper's figure in words: "+22% accuracy"
    paper_value: float                       # that figure as a number, in `per_seed`'s units
    per_seed: Callable[[Rows], list[float]]  # one value per seed from the run's result rows
    higher: bool = True                      # the claim is that the value is above `null`
    null: float = 0.0                        # "no effect": 0 for differences, 1 for ratios
    unit: str = ""


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student t quantile (exact table to 30 degrees of freedom, then normal)."""
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
             2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
             2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
    return table[dof - 1] if 1 <= dof <= len(table) else 1.96


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t interval of the mean; one value gives a point, no width."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(claim: Claim, mean: float, low: float, high: float) -> str:
    sign = 1 if claim.higher else -1
    if sign * (mean - claim.null) <= 0:
        return "not reproduced"
    near, far = (low, high) if claim.higher else (-high, -low)
    null, paper = sign * claim.null, sign * claim.paper_value
    if not math.isnan(near) and near > null and far >= paper:
        return "reproduced"
    return "same direction"


def check(claims: Sequence[Claim], rows: Rows) -> list[dict]:
    """One row per claim: what, paper, ours, the interval, seeds, verdict. A claim the rows
    cannot answer (a method left out of the run) is left out; one whose values cannot be
    computed or are not finite is reported as undetermined, never failing the finished run.
    Rows of a grid run (a `setting` column) are checked setting by setting: one row per claim
    and setting, the setting named in the row."""
    settings = list(dict.fromkeys(r["setting"] for r in rows
                                  if isinstance(r, dict) and "setting" in r))
    if settings:
        return [{"setting": s, **row} for s in settings
                for row in check(claims, [{k: v for k, v in r.items() if k != "setting"}
                                          for r in rows if r.get("setting") == s])]
    out = []
    for c in claims:
        row = {"claim": c.what, "paper": c.paper, "ours": float("nan"), "ci95_low": float("nan"),
               "ci95_high": float("nan"), "seeds": 0, "unit": c.unit}
        try:
            values = [float(v) for v in c.per_seed(rows)]
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            out.append({**row, "verdict": f"undetermined ({type(err).__name__}: {err})"})
            continue
        if not values:
            continue
        if not all(math.isfinite(v) for v in values):
            out.append({**row, "seeds": len(values), "verdict": "undetermined (not finite)"})
            continue
        mean, low, high = interval(values)
        out.append({**row, "ours": mean, "ci95_low": low, "ci95_high": high,
                    "seeds": len(values), "verdict": verdict(c, mean, low, high)})
    return out


def markdown(table: Sequence[dict]) -> str:
    grid = any("setting" in r for r in table)
    lines = ["| " + ("setting | " if grid else "") +
             "claim | paper | ours (mean) | 95% interval | seeds | verdict |",
             "|---" * (7 if grid else 6) + "|"]
    for r in table:
        ci = "n/a (one seed)" if r["seeds"] == 1 else "n/a" if math.isnan(r["ci95_low"]) else \
            f"[{r['ci95_low']:.4g}, {r['ci95_high']:.4g}]"
        lines.append("| " + (f"{r.get('setting', '')} | " if grid else "") +
                     f"{r['claim']} | {r['paper']} | {r['ours']:.4g}{r['unit']} | {ci} | "
                     f"{r['seeds']} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def seed_summary(rows: Rows, reference: str = "") -> list[dict]:
    """A multi-seed run's table with intervals: one row per (method, metric) with the mean over
    seeds and its 95% interval and, when `reference` (the proposed method) is one of the
    methods, the paired difference method - reference seed by seed, with its mean and interval.
    A method is the rows' text columns together (method, or method and tenant, or model and
    task); the first of them names it, and `reference` replaces that one to find the pair."""
    text = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, str)))
    if not text:
        return []
    numeric = [k for k in dict.fromkeys(k for r in rows for k in r)
               if k not in (*text, "seed", "workload_seed")
               and all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                       for r in rows if k in r)]
    group = lambda r: tuple(r.get(k) for k in text)  # noqa: E731
    value = {(group(r), r.get("seed"), k): float(r[k]) for r in rows for k in numeric if k in r}
    out = []
    for g in dict.fromkeys(group(r) for r in rows):
        ref = (reference, *g[1:])
        for k in numeric:
            per_seed = {s: v for (gg, s, kk), v in value.items() if gg == g and kk == k}
            finite = [v for v in per_seed.values() if math.isfinite(v)]
            if not finite:
                continue
            mean, low, high = interval(finite)
            row = {**dict(zip(text, g)), "metric": k, "seeds": len(finite), "mean": mean,
                   "ci95_low": low, "ci95_high": high}
            if reference and g != ref:
                diffs = [v - value[ref, s, k] for s, v in per_seed.items()
                         if (ref, s, k) in value and math.isfinite(v)
                         and math.isfinite(value[ref, s, k])]
                if diffs:
                    d, dl, dh = interval(diffs)
                    row.update({f"minus_{reference}": d, "diff_ci95_low": dl,
                                "diff_ci95_high": dh})
            out.append(row)
    return out


def _paired(metric: str, treatment: str, baseline: str, by: str, compare) -> Callable:
    def per_seed(rows: Rows) -> list[float]:
        value = {(r[by], r.get("seed")): float(r[metric]) for r in rows if metric in r}
        return [compare(value[treatment, s], value[baseline, s])
                for (name, s) in value if name == treatment and (baseline, s) in value]
    return per_seed


def paired_difference(metric: str, treatment: str, baseline: str, by: str = "method"):
    """`per_seed` for the usual claim: `treatment`'s `metric` minus `baseline`'s, seed by seed
    (rows carry `by` and `seed`; a seed missing either side is left out, not imputed)."""
    return _paired(metric, treatment, baseline, by, lambda t, b: t - b)


def relative_difference(metric: str, treatment: str, baseline: str, by: str = "method"):
    """`per_seed` for "x% less" / "x% better": 100 (treatment - baseline) / baseline, in percent,
    seed by seed."""
    return _paired(metric, treatment, baseline, by, lambda t, b: 100 * (t / b - 1))
