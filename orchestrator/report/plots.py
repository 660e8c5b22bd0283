"""Sections -> PNG plots: accuracy curves per table row, final-accuracy bars, paired differences.

matplotlib is imported inside _new_axes (a bare Figure on an Agg canvas), not at import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator import paired
from orchestrator.report.base import MAIN_METRIC, Report, Section, as_tuple, fmt_value, norm_order, slug


def write_plots(report: Report, keep_figures: bool = False) -> list[Path]:
    """Per dataset x setting x table row: class-IL accuracy after each task, one line per layer
    (mean over seeds, band = ± one sample std); per dataset x setting: final class-IL FAA bars
    and, when some layer shares a seed with the baseline, the paired differences."""
    plots_dir = report.out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    done = report.trials[report.trials["status"] == "finished"]
    curves_by_key = done.groupby("_key")["_curve"].apply(list)
    for section in report.sections:
        for row_vals, group in section.cells.groupby(section.row_keys, dropna=False, sort=False):
            curves = [_curve_stats(_line_label(r), curves_by_key.get(r["_key"], []))
                      for _, r in _rows_in_norm_order(group)]
            title, stem = _row_title(section, row_vals)
            _save(report, curve_figure(title, curves), plots_dir / f"{stem}.png", keep_figures)
        _save(report, bar_figure(section), plots_dir / f"{section.name}_final_{MAIN_METRIC}.png",
              keep_figures)
        if not section.paired.empty and (section.paired["n"] > 0).any():
            _save(report, paired_figure(section), plots_dir / f"{section.name}_paired.png", keep_figures)
    return report.plots


def _curve_stats(label: str, curves: list[list[float]]) -> tuple[str, np.ndarray, np.ndarray]:
    """Mean and sample std across seeds per task (NaN std for one seed: no band)."""
    length = max((len(c) for c in curves), default=0)
    stack = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        stack[i, :len(c)] = c
    mean = np.nanmean(stack, axis=0) if len(curves) else np.zeros(0)
    std = np.nanstd(stack, axis=0, ddof=1) if len(curves) > 1 else np.full(length, np.nan)
    return label, mean, std


def curve_figure(title: str, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> Any:
    """One line per layer (label = layer), x = tasks learned, shaded ± std band."""
    fig, ax = _new_axes((6.4, 4.2))
    for label, mean, std in curves:
        x = np.arange(1, len(mean) + 1)
        (line,) = ax.plot(x, mean, marker="o", label=label)
        if np.isfinite(std).any():
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    n_tasks = max((len(m) for _, m, _ in curves), default=1)
    ax.set_xticks(range(1, n_tasks + 1))
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("class-IL accuracy on seen tasks (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def bar_figure(section: Section) -> Any:
    """Final class-IL FAA per layer (bars, label = layer) for each table row, error bar = std."""
    cells = section.cells
    norms = norm_order(cells["norm"].unique())
    rows = list(cells.groupby(section.row_keys, dropna=False, sort=False))
    fig, ax = _new_axes((max(6.4, 1.2 + 0.35 * len(rows) * len(norms)), 4.2))
    width = 0.8 / len(norms)
    x = np.arange(len(rows))
    for k, norm in enumerate(norms):
        means, stds = [], []
        for _, group in rows:
            hit = group[group["norm"] == norm]
            means.append(hit[f"{MAIN_METRIC}_mean"].iloc[0] if len(hit) else np.nan)
            stds.append(hit[f"{MAIN_METRIC}_std"].iloc[0] if len(hit) else np.nan)
        ax.bar(x + (k - (len(norms) - 1) / 2) * width, np.nan_to_num(means), width,
               yerr=np.nan_to_num(stds), capsize=3, label=norm)
    ax.set_xticks(x, ["\n".join(fmt_value(v) for v in as_tuple(vals)) for vals, _ in rows],
                  fontsize=8)
    ax.set_xlabel(" / ".join(section.row_keys))
    ax.set_ylabel("final class-IL accuracy (%)")
    ax.set_title(f"{section.dataset} / {section.setting}: final class-IL FAA, mean ± std over seeds",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def paired_figure(section: Section) -> Any:
    shown = int((section.paired["n"] > 0).sum())
    fig, ax = _new_axes((7.2, 1.6 + 0.35 * shown))
    paired.plot_differences(ax, section.paired, section.row_keys)
    ax.set_title(f"{section.dataset} / {section.setting}: class-IL FAA minus "
                 f"{section.paired['baseline'].iloc[0]}, paired by seed", fontsize=10)
    return fig


def _new_axes(size: tuple[float, float]) -> tuple[Any, Any]:
    # A bare Figure on an Agg canvas: headless, and no pyplot global state to leak or switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(report: Report, fig: Any, path: Path, keep: bool) -> None:
    fig.savefig(path, dpi=120)
    report.plots.append(path)
    report.files.append(path)
    if keep:
        report.figures[path] = fig


def _rows_in_norm_order(group: pd.DataFrame) -> list[tuple[Any, pd.Series]]:
    order = {n: i for i, n in enumerate(norm_order(group["norm"].unique()))}
    return sorted(group.iterrows(), key=lambda item: order[item[1]["norm"]])


def _line_label(row: pd.Series) -> str:
    """The layer's name; a gridded layer also shows its chosen options."""
    return f"{row['norm']} ({row['norm_options']})" if row["grid_points"] > 1 else str(row["norm"])


def _row_title(section: Section, row_vals: Any) -> tuple[str, str]:
    values = dict(zip(section.row_keys, as_tuple(row_vals)))
    extra = [(k, fmt_value(v)) for k, v in values.items() if k not in ("method", "buffer_size")]
    method, size = fmt_value(values["method"]), fmt_value(values["buffer_size"])
    title = " / ".join([section.dataset, section.setting, method, f"buffer {size}",
                        *(f"{k}={v}" for k, v in extra)])
    stem = "_".join([section.name, method, f"buf{size}", *(f"{k}-{v}" for k, v in extra)])
    return title, slug(stem)
