"""The prince figures, on `matplotlib.figure.Figure` (no pyplot state; Agg-safe)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def equilibrium(names: list[str], outcomes: dict) -> Figure:
    """Prices and enrolled devices per tenant, one bar group per tenant, one bar per method."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(outcomes), 1)
    x = np.arange(len(names))
    for i, (method, eq) in enumerate(outcomes.items()):
        axes[0].bar(x + i * width, eq.prices, width, label=method)
        axes[1].bar(x + i * width, eq.enrolled, width, label=method)
    for ax, label in zip(axes, ("price per round of participation", "devices enrolled")):
        ax.set_xticks(x + 0.4 - width / 2, names)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("equilibrium prices")
    axes[1].set_title("device allocation")
    axes[1].legend(fontsize="small", ncols=2)
    return fig


def progress_vs_time(names: list[str], runs: dict, targets: dict) -> Figure:
    """Each tenant's target metric against simulated time, one line per method; the target as a
    dashed line, so time to target reads off the x axis."""
    fig = Figure(figsize=(4 * len(names), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        metric, target = targets[name]
        for method, per_tenant in runs.items():
            hist = per_tenant[name]["history"]
            if hist:
                ax.plot([h["sim_seconds"] for h in hist], [h[metric] for h in hist],
                        marker=".", label=method)
        ax.axhline(target, ls="--", color="grey", lw=1)
        ax.set(title=name, xlabel="simulated time (s)", ylabel=f"test {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def calibration(stored: dict) -> Figure:
    """Per tenant: measured rounds to target against the bound's variance term S (1/q-shaped),
    unbiased (filled) and plain-FedAvg (open) points, the fitted bound as a line; censored runs
    (target never met) drawn at the round cap with an up-arrow."""
    tenants = stored["tenants"]
    fig = Figure(figsize=(4 * max(len(tenants), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(tenants), 1)))
    for ax, (name, entry) in zip(axes, tenants.items()):
        pts = entry["points"]
        for agg, style in (("unbiased", dict(color="C0")), ("biased", dict(color="C3",
                                                                            facecolors="none"))):
            mine = [p for p in pts if p["aggregation"] == agg]
            met = [p for p in mine if np.isfinite(p["rounds"])]
            cens = [p for p in mine if not np.isfinite(p["rounds"])]
            ax.scatter([p["S"] for p in met], [p["rounds"] for p in met], label=agg, **style)
            ax.scatter([p["S"] for p in cens], [p["max_rounds"] for p in cens], marker="^",
                       color=style["color"], alpha=0.6,
                       label=f"{agg}: not reached by the cap" if cens else None)
        if pts and np.isfinite(entry["alpha"]):
            s = np.linspace(0, max(p["S"] for p in pts) * 1.05, 50)
            ax.plot(s, (entry["alpha"] * s + entry["beta"]) / entry["eps"], color="C0", lw=1,
                    label=f"fit: alpha {entry['alpha']:.3g}, beta {entry['beta']:.3g}")
        ax.set(title=name, xlabel="S = sum p^2 G^2 / q", ylabel="rounds to target")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig
