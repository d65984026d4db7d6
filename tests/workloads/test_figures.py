"""Figures a paper could use: each series its own marker and line style (greyscale-safe), error
bars explained, log axes where values span a decade, targets labelled in the legend."""
from __future__ import annotations

import numpy as np
import pytest

from workloads.aeria import plots as aeria_plots
from workloads.prince import plots as prince_plots


def _summary(scale: float) -> dict:
    counts = np.array([300.0, 1000, 3000, 10000])
    return {f"mech{i}": {"num_users": counts, "revenue_mean": scale * counts * (1 + i / 10),
                         "revenue_std": counts / 50, "load_mean": counts / 3000}
            for i in range(9)}


def test_aeria_curves_tell_nine_mechanisms_apart_and_explain_the_bars():
    ax = aeria_plots.revenue_vs_users(_summary(0.3), seeds=10).axes[0]
    assert [c.get_label() for c in ax.containers] == [f"mech{i}" for i in range(9)]
    styles = {(c.lines[0].get_marker(), c.lines[0].get_linestyle()) for c in ax.containers}
    assert len(styles) == 9
    assert "95% interval over 10 seeds" in ax.get_legend().get_title().get_text()
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()   # 90 .. 3,900
    assert "currency units" in ax.get_ylabel()


def test_aeria_keeps_a_linear_axis_when_values_stay_within_a_decade():
    summary = {k: {**v, "revenue_mean": 100 + v["num_users"] / 1000} for k, v in
               _summary(1).items()}
    assert aeria_plots.revenue_vs_users(summary, seeds=3).axes[0].get_yscale() == "linear"


def test_prince_progress_gives_each_method_a_style_and_labels_the_target():
    methods = ["prince", "uniform_price", "independent_pricing", "random_assignment",
               "biased_aggregation"]
    runs = {m: {"vit": {"history": [{"sim_seconds": t, "loss": 2.5 - 0.01 * t * i}
                                    for t in range(4)]}} for i, m in enumerate(methods)}
    fig = prince_plots.progress_vs_time(["vit"], runs, {"vit": ("loss", 2.4)})
    ax = fig.axes[0]
    styles = {(line.get_marker(), line.get_linestyle()) for line in ax.get_lines()
              if line.get_label() in methods}
    assert len(styles) == len(methods)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [*methods, "target"]
    assert "lower is better" in ax.get_title() and "(s)" in ax.get_xlabel()


def test_prince_keeps_each_methods_colour_when_a_panel_lacks_a_method():
    methods = ["prince", "uniform_price", "independent_pricing"]
    hist = [{"sim_seconds": t, "loss": 2.5 - 0.1 * t} for t in range(3)]
    runs = {m: {"vit": {"history": hist}, "bert": {"history": hist if m != "prince" else []}}
            for m in methods}
    fig = prince_plots.progress_vs_time(["vit", "bert"], runs,
                                        {"vit": ("loss", 2.3), "bert": ("loss", 2.3)})
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()}
               for ax in fig.axes]
    assert colours[1]["uniform_price"] == colours[0]["uniform_price"]
    assert colours[1]["independent_pricing"] == colours[0]["independent_pricing"]


def test_deepfusion_tables_plot_one_column_per_setting_with_each_methods_interval():
    from orchestrator.claims import seed_summary
    from workloads.deepfusion import plots as deepfusion_plots

    methods = ["deepfusion", "fedjets", "centralized"]
    rows = [{"method": m, "log_ppl": 3.0 + i + 0.1 * s, "answer_token_accuracy": 0.5 - 0.1 * i,
             "seed": s, "setting": f"case={case}"}
            for case in ("financial", "medical") for s in range(3)
            for i, m in enumerate(methods)]
    fig = deepfusion_plots.tables_over_seeds(seed_summary(rows, "deepfusion"))
    axes = fig.axes
    assert len(axes) == 4                                  # 2 metrics x 2 settings
    assert [ax.get_title() for ax in axes[:2]] == ["case=financial", "case=medical"]
    bars = axes[0].containers
    assert len(bars) == len(methods) and all(c.has_xerr for c in bars)
    assert len({c.lines[0].get_marker() for c in bars}) == len(methods)
    assert "lower is better" in axes[0].get_xlabel()
    assert "3 seeds" in fig.get_suptitle() and "95%" in fig.get_suptitle()


def test_deepfusion_summary_logs_tables_I_and_II_and_the_figure_on_the_parent_run(workdir):
    from mlflow import MlflowClient

    from orchestrator.config import load_experiment
    from orchestrator.tracking import parent_run
    from tests.conftest import QUICKSTART, store
    from workloads.deepfusion.workload import summarize

    rows = [{"method": m, "log_ppl": 3.0 + i + 0.1 * s, "ppl": 20.0 + i, "comm_bytes": 1e9,
             "token_accuracy": 0.5, "answer_token_accuracy": 0.4, "seed": s,
             "setting": f"case={case}"}
            for case in ("financial", "medical") for s in range(3)
            for i, m in enumerate(["deepfusion", "fedjets"])]
    cfg = load_experiment(QUICKSTART, ["mlflow.experiment=unit"])
    with parent_run(cfg, str(QUICKSTART), "run") as parent:
        summarize(rows, parent)
    client = MlflowClient(store())
    assert {"table_I.csv", "table_II.csv", "tables_over_seeds.png", "tables_over_seeds.svg"} <= \
        {a.path for a in client.list_artifacts(parent.run_id)}
    table_i = open(client.download_artifacts(parent.run_id, "table_I.csv")).read()
    assert "fedjets,case=medical,log_ppl,3," in table_i          # per method, setting, metric
    assert "answer_token_accuracy" not in table_i              # that one is Table II's
    import csv
    import io

    (fedjets,) = [r for r in csv.DictReader(io.StringIO(table_i))
                  if (r["method"], r["setting"], r["metric"]) == ("fedjets", "case=financial",
                                                                  "log_ppl")]
    assert float(fedjets["minus_deepfusion"]) == pytest.approx(1.0), "paired, seed by seed"
    assert float(fedjets["ci95_low"]) < float(fedjets["mean"]) < float(fedjets["ci95_high"])
