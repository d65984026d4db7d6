"""The aeria figures, built on `matplotlib.figure.Figure` (no pyplot state, any backend, Agg-safe).

Each function takes the per-mechanism summary of `workload.summarize`: {mechanism: {"num_users",
"revenue_mean", "revenue_std", "served_mean", "served_std", "competitive_ratio", ...}} with one
entry per user count, and returns a Figure for `tracker.log_figure`.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from orchestrator.plotting import STYLES

Summary = dict[str, dict[str, np.ndarray]]


def ci95_half_width(std: np.ndarray, seeds: int) -> np.ndarray:
    """Half-width of the 95% t interval of a mean over `seeds`, from the population std (ddof 0)
    the summary holds; 0 for one seed (no interval)."""
    from orchestrator.claims import t_quantile_975

    if seeds < 2:
        return np.zeros_like(std)
    return t_quantile_975(seeds - 1) * std * np.sqrt(seeds / (seeds - 1)) / np.sqrt(seeds)


def _curves(summary: Summary, key: str, ylabel: str, title: str, seeds: int) -> Figure:
    fig = Figure(figsize=(8.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for (name, stats), (marker, line) in zip(summary.items(), STYLES):
        ax.errorbar(stats["num_users"], stats[f"{key}_mean"],
                    yerr=ci95_half_width(stats[f"{key}_std"], seeds), marker=marker,
                    linestyle=line, capsize=3, label=name)
    ax.set_xscale("log")
    means = np.concatenate([s[f"{key}_mean"] for s in summary.values()]) if summary else []
    if len(means) and means.min() > 0 and means.max() / means.min() > 10:
        ax.set_yscale("log")  # the values span a decade or more
        first, _, rest = ylabel.partition("\n")
        ylabel = f"{first} (log scale)" + (f"\n{rest}" if rest else "")
    first = next(iter(summary.values())) if summary else {}
    counts, loads = first.get("num_users", []), first.get("load_mean")
    labels = [f"{int(n):,}" if loads is None else f"{int(n):,}\nload {load:.2g}x"
              for n, load in zip(counts, counts if loads is None else loads)]
    ax.set_xticks(counts, labels)
    ax.minorticks_off()
    ax.set_xlabel("number of users (log scale); load = demand at cost / edge capacity")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    bars = f"bars: 95% interval over {seeds} seeds" if seeds > 1 else "one seed: no interval"
    ax.legend(fontsize="small", title=f"mean; {bars}", title_fontsize="small",
              loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes: covers no line
    return fig


def revenue_vs_users(summary: Summary, seeds: int) -> Figure:
    """ASP revenue (profit) against the number of users: mean and 95% interval over seeds."""
    return _curves(summary, "revenue", "ASP revenue per market\n(payments - EIP cost, currency "
                   "units)", "Revenue vs users", seeds)


def served_vs_users(summary: Summary, seeds: int) -> Figure:
    """Users served against the number of users: mean and 95% interval over seeds."""
    return _curves(summary, "served", "users served per market", "Served users vs users", seeds)


def utilisation_vs_users(summary: Summary, seeds: int) -> Figure:
    """Mean share of the edge servers the served users hold against the number of users."""
    return _curves(summary, "utilisation", "edge capacity in use\n(mean share of a server)",
                   "Utilisation vs users", seeds)


def arrivals_over_time(arrivals: dict[str, list[dict]]) -> Figure:
    """Revenue, served users and utilisation per time window of the arrivals simulation: the
    mean over seeds with a 95% band, one line per mechanism."""
    fig = Figure(figsize=(7.2, 8.0), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    panels = (("revenue", "ASP revenue per window"), ("served", "users served per window"),
              ("utilisation", "edge capacity in use\n(mean share of a server)"))
    seeds = 1
    for (name, rows), (marker, line) in zip(arrivals.items(), STYLES):
        windows = sorted({r["window"] for r in rows})
        for ax, (key, label) in zip(axes, panels):
            per = [np.array([r[key] for r in rows if r["window"] == w], float) for w in windows]
            seeds = len(per[0]) if per else 1
            mean = np.array([v.mean() for v in per])
            half = ci95_half_width(np.array([v.std() for v in per]), seeds)
            ax.plot(windows, mean, marker=marker, linestyle=line, markersize=3, label=name)
            ax.fill_between(windows, mean - half, mean + half, alpha=0.15)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time window")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_title(f"Users arriving over time (mean; band: 95% interval over {seeds} seeds)")
    axes[0].legend(fontsize="x-small", ncol=2)
    return fig


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
