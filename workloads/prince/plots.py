"""The prince figures, on `matplotlib.figure.Figure` (no pyplot state; Agg-safe)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from orchestrator.plotting import HATCHES, STYLES


def equilibrium(names: list[str], outcomes: dict) -> Figure:
    """Prices and enrolled devices per tenant, one bar group per tenant, one bar per method."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(outcomes), 1)
    x = np.arange(len(names))
    for i, (method, eq) in enumerate(outcomes.items()):
        style = dict(label=method, hatch=HATCHES[i % len(HATCHES)], edgecolor="black", lw=0.4)
        axes[0].bar(x + i * width, eq.prices, width, **style)
        axes[1].bar(x + i * width, eq.enrolled, width, **style)
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
    dotted line, so time to target reads off the x axis. One seed's market (no intervals)."""
    fig = Figure(figsize=(3.6 * len(names), 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        metric, target = targets[name]
        for i, ((method, per_tenant), (marker, line)) in enumerate(zip(runs.items(), STYLES)):
            hist = per_tenant[name]["history"]
            if hist:  # colour fixed per method: a panel without some method keeps the others'
                ax.plot([h["sim_seconds"] for h in hist], [h[metric] for h in hist],
                        marker=marker, linestyle=line, markersize=4, label=method,
                        color=f"C{i % 10}")
        ax.axhline(target, ls=(0, (1, 1)), color="black", lw=1, label="target")
        ax.set(title=f"{name} ({'higher' if metric == 'accuracy' else 'lower'} is better)",
               xlabel="simulated wall time (s)", ylabel=f"test {metric}")
        ax.grid(alpha=0.3)
    legend = {}  # every method that has a line in some panel, once
    for ax in axes:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="outside lower center", fontsize="small",
               ncols=min(len(labels), 2 * len(names)))
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
            for subset in (False, True):  # every owner at q, or the largest owners at q = 1
                some = [p for p in met if (p.get("owner_fraction", 1.0) < 1) == subset]
                if some:
                    ax.scatter([p["S"] for p in some], [p["rounds"] for p in some],
                               marker="s" if subset else "o", **style,
                               label=f"{agg}, fewer owners at q = 1" if subset else agg)
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
