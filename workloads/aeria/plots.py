"""The aeria figures, built on `matplotlib.figure.Figure` (no pyplot state, any backend, Agg-safe).

Each function takes the per-mechanism summary of `workload.summarize`: {mechanism: {"num_users",
"revenue_mean", "revenue_std", "served_mean", "served_std", "competitive_ratio", ...}} with one
entry per user count, and returns a Figure for `tracker.log_figure`.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

Summary = dict[str, dict[str, np.ndarray]]


# one (marker, line style) per mechanism: nine series stay apart in greyscale too
STYLES = [(m, ls) for ls in ("-", "--", "-.", ":") for m in ("o", "s", "^", "D", "v", "P", "X")]


def ci95_half_width(std: np.ndarray, seeds: int) -> np.ndarray:
    """Half-width of the 95% t interval of a mean over `seeds`, from the population std (ddof 0)
    the summary holds; 0 for one seed (no interval)."""
    from orchestrator.claims import t_quantile_975

    if seeds < 2:
        return np.zeros_like(std)
    return t_quantile_975(seeds - 1) * std * np.sqrt(seeds / (seeds - 1)) / np.sqrt(seeds)


def _curves(summary: Summary, key: str, ylabel: str, title: str, seeds: int) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for (name, stats), (marker, line) in zip(summary.items(), STYLES):
        ax.errorbar(stats["num_users"], stats[f"{key}_mean"],
                    yerr=ci95_half_width(stats[f"{key}_std"], seeds), marker=marker,
                    linestyle=line, capsize=3, label=name)
    ax.set_xscale("log")
    means = np.concatenate([s[f"{key}_mean"] for s in summary.values()]) if summary else []
    if len(means) and means.min() > 0 and means.max() / means.min() > 100:
        ax.set_yscale("log")  # the values span decades
    counts = next(iter(summary.values()))["num_users"] if summary else []
    ax.set_xticks(counts, [f"{int(n):,}" for n in counts])
    ax.minorticks_off()
    ax.set_xlabel("number of users (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    bars = f"bars: 95% interval over {seeds} seeds" if seeds > 1 else "one seed: no interval"
    ax.legend(fontsize="small", title=f"mean; {bars}", title_fontsize="small")
    return fig


def revenue_vs_users(summary: Summary, seeds: int) -> Figure:
    """ASP revenue (profit) against the number of users: mean and 95% interval over seeds."""
    return _curves(summary, "revenue", "ASP revenue per market\n(payments - EIP cost, currency "
                   "units)", "Revenue vs users", seeds)


def served_vs_users(summary: Summary, seeds: int) -> Figure:
    """Users served against the number of users: mean and 95% interval over seeds."""
    return _curves(summary, "served", "users served per market", "Served users vs users", seeds)


def competitive_ratio_bars(summary: Summary) -> Figure:
    """F^(2) / revenue per mechanism at each user count (lower is better; 1 = the benchmark),
    mean over seeds; a log axis when the ratios span more than 10x."""
    fig = Figure(figsize=(7.2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    names = list(summary)
    counts = next(iter(summary.values()))["num_users"] if names else np.array([])
    width = 0.8 / max(len(counts), 1)
    for j, n in enumerate(counts):
        ratios = [summary[name]["competitive_ratio"][j] for name in names]
        shown = [r if np.isfinite(r) else np.nan for r in ratios]
        ax.bar(np.arange(len(names)) + j * width, shown, width, label=f"{int(n):,} users",
               hatch=("", "//", "..", "xx", "\\\\", "++")[j % 6], edgecolor="black", lw=0.5)
    ax.axhline(1.0, color="black", lw=0.8)
    finite = [r for name in names for r in summary[name]["competitive_ratio"]
              if np.isfinite(r) and r > 0]
    if finite and max(finite) / min(finite) > 10:
        ax.set_yscale("log")  # one outlier would squash every other bar
    ax.set_xticks(np.arange(len(names)) + width * (len(counts) - 1) / 2, names, rotation=30,
                  ha="right")
    ax.set_ylabel("competitive ratio F^(2) / revenue\n(1 = the optimal single price; lower is "
                  "better)")
    ax.set_title("Competitive ratio (missing bar: revenue <= 0)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig
