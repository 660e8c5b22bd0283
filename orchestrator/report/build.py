"""build_report: the report's steps in order, load -> aggregate -> tables -> plots."""
from __future__ import annotations

from pathlib import Path

from orchestrator.report.aggregate import build_sections, missing_trials, summarize
from orchestrator.report.base import DEFAULT_BASELINE, Report, ReportError, status_counts
from orchestrator.report.load import scan_sweep
from orchestrator.report.plots import write_plots
from orchestrator.report.tables import write_files


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *,
                 plots: bool = True, keep_figures: bool = False,
                 baseline: str | None = None) -> Report:
    """Read a sweep, write every report file, return what was computed and written.

    Raises ReportError (a ValueError) when the directory is missing, no trial finished, or an
    explicit `baseline` is no layer of the sweep (the default, bn, may be absent: its paired
    tables then say so). keep_figures=True keeps the matplotlib Figures in Report.figures.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir
    trials = scan_sweep(sweep_dir)
    counts = status_counts(trials)
    if counts["finished"] == 0:
        rest = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "finished") or "no trials"
        raise ReportError(f"no finished trial in {sweep_dir} ({rest})")
    summary = summarize(trials)
    layers = sorted(summary["norm"].unique())
    if baseline is not None and baseline.lower() not in layers:
        raise ReportError(f"--baseline {baseline!r} is not a layer of this sweep; layers: {', '.join(layers)}")
    sections = build_sections(summary, trials, (baseline or DEFAULT_BASELINE).lower())
    rep = Report(sweep_dir, out_dir, trials, summary, sections, missing_trials(trials))
    write_files(rep)
    if plots:
        write_plots(rep, keep_figures=keep_figures)
    return rep
