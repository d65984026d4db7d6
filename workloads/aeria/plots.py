"""The aeria figures, built on `matplotlib.figure.Figure` (no pyplot state, any backend, Agg-safe).

Each function takes the per-mechanism summary of `workload.summarize`: {mechanism: {"num_users",
"revenue_mean", "revenue_std", "served_mean", "served_std", "competitive_ratio", ...}} with one
entry per user count, and returns a Figure for `tracker.log_figure`.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

Summary = dict[str, dict[str, np.ndarray]]


def _curves(summary: Summary, key: str, ylabel: str, title: str) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for name, stats in summary.items():
        ax.errorbar(stats["num_users"], stats[f"{key}_mean"], yerr=stats[f"{key}_std"],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    counts = next(iter(summary.values()))["num_users"] if summary else []
    ax.set_xticks(counts, [f"{int(n):,}" for n in counts])
    ax.minorticks_off()
    ax.set_xlabel("number of users")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def revenue_vs_users(summary: Summary) -> Figure:
    """ASP revenue (profit) against the number of users, mean +- std over seeds."""
    return _curves(summary, "revenue", "ASP revenue (payments - EIP cost)", "Revenue vs users")


def served_vs_users(summary: Summary) -> Figure:
    """Users served against the number of users, mean +- std over seeds."""
    return _curves(summary, "served", "users served", "Served users vs users")


def competitive_ratio_bars(summary: Summary) -> Figure:
    """F^(2) / revenue per mechanism at each user count (lower is better; 1 = the benchmark)."""
    fig = Figure(figsize=(7.2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    names = list(summary)
    counts = next(iter(summary.values()))["num_users"] if names else np.array([])
    width = 0.8 / max(len(counts), 1)
    for j, n in enumerate(counts):
        ratios = [summary[name]["competitive_ratio"][j] for name in names]
        shown = [r if np.isfinite(r) else np.nan for r in ratios]
        ax.bar(np.arange(len(names)) + j * width, shown, width, label=f"{int(n)} users")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(counts) - 1) / 2, names, rotation=30,
                  ha="right")
    ax.set_ylabel("competitive ratio F^(2) / revenue")
    ax.set_title("Competitive ratio (missing bar: revenue <= 0)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig
