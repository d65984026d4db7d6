"""Calibrate the bound that values devices from measured training (SEEDS 2.2 form, fit [OURS]).

The game prices devices with R_m(q) = (alpha_m S_m(q) + beta_m) / eps_m, where
S_m(q) = sum_n p_n^2 G_n^2 / q_n over the tenant's enrolled devices (valuation.py). Hand-set
alpha, beta say nothing about the real tenants, so a calibration run measures them: every owner of
tenant m joins each round with probability q (one level at a time), or only the owners with the
most data join, every round (`owner_fractions`), SFL trains from the shared initial weights until
the target, and the rounds it took are recorded. eps_m follows from the
target (`target_gap`); the fit is nonnegative least squares of measured R * eps on S, with each
run that never reached the target as a constraint (the bound must predict more rounds than it
ran), so the bound with the fitted constants predicts the measured rounds (`predicted_rounds`
beside every point). `python -m workloads.prince.calibration refit FILE` refits a stored one.

The same runs repeated with plain FedAvg (biased aggregation) show what the p/q re-weighting buys
at each level. A stored calibration (JSON: constants, every measured point, and the config it was
measured under) is applied to a later run with `prince.calibration.file`; `check_matches` refuses
one measured on other models or targets.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# the tenant settings a calibration depends on: a stored one applies only where these agree
MATCHED = ("size", "cut_layer", "pretrained", "lora_rank", "target_metric", "target", "lr",
           "optimizer", "batch_size", "local_steps", "train_limit")


@dataclass(frozen=True)
class LevelAllocation:
    """Owners of tenant m enrolled at participation level q: what `BiasResilient` reads."""

    choice: np.ndarray  # (N,) m for enrolled owners, -1 elsewhere
    q: np.ndarray       # (N,) q for enrolled owners, 0 elsewhere

    @classmethod
    def owners_at(cls, data_m: np.ndarray, m: int, level: float,
                  fraction: float = 1.0) -> "LevelAllocation":
        """The `fraction` of m's owners with the most data (at least one), each at q = level.
        Fewer owners raise S through the data shares p, as a game that enrols few does."""
        owners = np.flatnonzero(data_m > 0)
        count = max(1, math.floor(fraction * len(owners)))  # half of 9 owners: 4
        keep = owners[np.argsort(-data_m[owners], kind="stable")][:count]
        on = np.zeros(len(data_m), bool)
        on[keep] = True
        return cls(np.where(on, m, -1), np.where(on, level, 0.0))


def measurement_grid(levels: list[float], owner_fractions: list[float],
                     biased: bool) -> list[tuple[float, float, bool]]:
    """(owner fraction, q, unbiased) of every calibration run: every owner at each level (plain
    FedAvg beside the p/q re-weighting where q < 1), then each smaller share of the owners at
    q = 1 (where the two aggregations coincide)."""
    runs = [(1.0, q, unbiased) for q in levels
            for unbiased in ((True, False) if biased and q < 1 else (True,))]
    return runs + [(f, 1.0, True) for f in owner_fractions if f < 1]


def target_gap(metric: str, target: float) -> float:
    """eps_m from the tenant's target: the loss itself for a loss target (F* >= 0 taken as 0),
    the error rate 1 - target for an accuracy target."""
    return float(target if metric == "loss" else 1.0 - target)


def variance_term(data_m: np.ndarray, grad_m: np.ndarray, q: np.ndarray) -> float:
    """S_m(q) = sum_n p_n^2 G_n^2 / q_n over the devices with q_n > 0 (p_n: data share)."""
    on = q > 0
    p = data_m[on] / data_m[on].sum()
    return float(np.sum(p ** 2 * grad_m[on] ** 2 / q[on]))


def measured_rounds(history: list[dict], metric: str, target: float) -> float:
    """Rounds until the target (`training.first_sustained_hit`, counted from 1); nan when it
    never got there (censored)."""
    from workloads.prince.training import first_sustained_hit

    r = first_sustained_hit(history, metric, target)
    return math.nan if r is None else float(r + 1)


def fit(points: list[dict], eps: float) -> dict:
    """alpha, beta >= 0 minimising sum (alpha S + beta - R eps)^2 over the unbiased points that
    reached the target, subject to every unbiased run that did not (censored after `max_rounds`)
    being predicted to need more than it ran: such a run says R > max_rounds, and dropping it
    biased the fit towards 'participation does not matter'. With one reached point and no
    binding censored run, beta alone (alpha 0); with none, nothing (nan)."""
    unbiased = [p for p in points if p["aggregation"] == "unbiased"]
    hit = [p for p in unbiased if np.isfinite(p["rounds"])]
    censored = [p for p in unbiased if not np.isfinite(p["rounds"]) and "max_rounds" in p]
    if not hit:
        return {"alpha": math.nan, "beta": math.nan, "eps": eps, "reached": 0, "censored": 0,
                "r2": math.nan}
    S = np.array([p["S"] for p in hit])
    y = np.array([p["rounds"] for p in hit]) * eps
    floor_S = np.array([p["S"] for p in censored])
    floor_y = np.array([p["max_rounds"] + 1.0 for p in censored]) * eps
    alpha, beta = _least_squares(S, y)
    if len(censored) and np.any(alpha * floor_S + beta < floor_y):
        alpha, beta = _least_squares_above(S, y, floor_S, floor_y)
    resid = y - (alpha * S + beta)
    r2 = (float(1 - resid @ resid / max(((y - y.mean()) ** 2).sum(), 1e-12))
          if len(hit) > 1 and np.ptp(y) > 0 else math.nan)
    return {"alpha": float(alpha), "beta": float(beta), "eps": eps, "reached": len(hit),
            "censored": len(censored), "r2": r2}


def _least_squares(S: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Nonnegative least squares of y on (S, 1); one distinct S: beta = mean y, alpha 0."""
    from scipy.optimize import nnls

    if len(S) < 2 or np.ptp(S) == 0:
        return 0.0, float(y.mean())
    (alpha, beta), _ = nnls(np.column_stack([S, np.ones_like(S)]), y)
    return float(alpha), float(beta)


def _least_squares_above(S: np.ndarray, y: np.ndarray, floor_S: np.ndarray,
                         floor_y: np.ndarray) -> tuple[float, float]:
    """The least squares of y on (S, 1) with alpha, beta >= 0 and alpha floor_S + beta >=
    floor_y (a convex problem in two variables: SLSQP from a feasible start)."""
    from scipy.optimize import minimize

    A = np.column_stack([S, np.ones_like(S)])
    start = np.array([max(float(np.max(floor_y / np.maximum(floor_S, 1e-12))), 0.0), 0.0])
    done = minimize(lambda x: float(np.sum((A @ x - y) ** 2)), start, method="SLSQP",
                    bounds=[(0, None), (0, None)],
                    constraints=[{"type": "ineq",
                                  "fun": lambda x: x[0] * floor_S + x[1] - floor_y}],
                    options={"ftol": 1e-12, "maxiter": 500})
    return float(done.x[0]), float(done.x[1])


def predicted_rounds(constants: dict, S: float) -> float:
    return (constants["alpha"] * S + constants["beta"]) / constants["eps"]


def tenant_settings(tenant_cfg: Any) -> dict:
    return {k: getattr(tenant_cfg, k) for k in MATCHED}


def build(points: list[dict], tenants: dict[str, Any], meta: dict) -> dict:
    """The stored calibration: per tenant its constants, its settings and its points (each with
    the fitted bound's prediction)."""
    out = {"meta": meta, "tenants": {}}
    for name, t in tenants.items():
        mine = [p for p in points if p["tenant"] == name]
        constants = fit(mine, target_gap(t.target_metric, t.target))
        for p in mine:
            p["predicted_rounds"] = (predicted_rounds(constants, p["S"])
                                     if np.isfinite(constants["alpha"]) else math.nan)
        out["tenants"][name] = {**constants, "settings": tenant_settings(t), "points": mine}
    return out


def save(calibration: dict, path: str | Path) -> Path:
    """Write atomically (a half-written file would be read as a broken calibration later)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dumps(calibration))
    tmp.replace(path)
    return path


def dumps(calibration: dict) -> str:
    return json.dumps(calibration, indent=1, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def check_matches(calibration: dict, name: str, tenant_cfg: Any) -> str | None:
    """Why `calibration` does not apply to tenant `name` as configured (None: it does)."""
    entry = calibration.get("tenants", {}).get(name)
    if entry is None:
        return f"it has no entry for tenant {name!r}"
    if not np.isfinite(entry.get("alpha", math.nan)):
        return f"tenant {name!r} never reached its target while it was measured"
    theirs, ours = entry["settings"], tenant_settings(tenant_cfg)
    differ = [k for k in MATCHED if theirs.get(k) != ours[k]]
    return (f"tenant {name!r} was measured with {', '.join(f'{k}={theirs.get(k)!r}' for k in differ)}"
            f" (this config: {', '.join(f'{k}={ours[k]!r}' for k in differ)})") if differ else None


def constants_for(calibration: dict, name: str) -> tuple[float, float, float]:
    entry = calibration["tenants"][name]
    return entry["alpha"], entry["beta"], entry["eps"]


def refit(calibration: dict) -> dict:
    """The stored calibration with every tenant's constants fitted again from its points (after
    a change to `fit`; the measurements are kept as they are)."""
    for entry in calibration["tenants"].values():
        constants = fit(entry["points"], entry["eps"])
        entry.update(constants)
        for p in entry["points"]:
            p["predicted_rounds"] = (predicted_rounds(constants, p["S"])
                                     if np.isfinite(constants["alpha"]) else math.nan)
    return calibration


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "refit":
        sys.exit("usage: python -m workloads.prince.calibration refit CALIBRATION.json")
    print(save(refit(load(sys.argv[2])), sys.argv[2]))
