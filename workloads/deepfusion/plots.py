"""DeepFusion's figures over seeds and settings (the paper's Tables I and II as dot plots)."""
from __future__ import annotations

import math

from matplotlib.figure import Figure

from orchestrator.plotting import STYLES

PANELS = (("log_ppl", "token perplexity (log, nats), lower is better"),
          ("answer_token_accuracy", "answer-token accuracy (Table II), higher is better"))


def methods_by_setting(summary: list[dict], metric: str) -> dict[str, list[dict]]:
    """{setting: the `seed_summary` rows of `metric`, one per method, in the run's order}."""
    out: dict[str, list[dict]] = {}
    for r in summary:
        if r["metric"] == metric:
            out.setdefault(r.get("setting", ""), []).append(r)
    return out


def tables_over_seeds(summary: list[dict]) -> Figure:
    """One column per setting, one row per metric: each method's mean over seeds (a marker) and
    its 95% t interval (the bar), so overlapping bars read as 'not told apart'."""
    settings = list(methods_by_setting(summary, PANELS[0][0]))
    seeds = max((r["seeds"] for r in summary), default=1)
    fig = Figure(figsize=(3.6 * len(settings) + 1.6, 2.0 + 1.7 * len(PANELS)),
                 layout="constrained")
    axes = fig.subplots(len(PANELS), len(settings), squeeze=False, sharey=True)
    for row, (metric, label) in enumerate(PANELS):
        by_setting = methods_by_setting(summary, metric)
        for col, setting in enumerate(settings):
            ax = axes[row][col]
            for i, r in enumerate(by_setting.get(setting, [])):
                marker, _ = STYLES[i % len(STYLES)]
                low, high = r["ci95_low"], r["ci95_high"]
                err = None if math.isnan(low) else [[r["mean"] - low], [high - r["mean"]]]
                ax.errorbar([r["mean"]], [r["method"]], xerr=err, fmt=marker, color="black",
                            ecolor="0.4", capsize=3, markersize=6)
            ax.grid(axis="x", alpha=0.3)
            ax.set_xlabel(label, fontsize=8)
            if row == 0:
                ax.set_title(setting.replace(",", ", ") or "all", fontsize=9)
    axes[0][0].invert_yaxis()  # shared: the run's first method on top in every panel
    fig.suptitle(f"mean over {seeds} seeds; bars: 95% t interval over seeds" if seeds > 1 else
                 "one seed: no interval (run seeds: 3 for 95% intervals)", fontsize=9)
    return fig
