"""A Report -> the text the terminal shows: counts, main tables, paired differences, missing
trials and the files worth opening."""
from __future__ import annotations

from pathlib import Path

from orchestrator import paired
from orchestrator.report.base import GRID_MARK, GRID_NOTE, MAIN_METRIC, Report, present
from orchestrator.report.tables import format_table, tables_dir


def summary_text(report: Report, max_missing: int = 20) -> str:
    """What the terminal shows at the end of a sweep: counts, main tables, missing trials, files."""
    counts = report.counts()
    lines = [f"Sweep {report.sweep_dir}: {len(report.trials)} trials: "
             + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for section in report.sections:
        table = format_table(section, MAIN_METRIC, higher_better=True, style="text")
        lines += ["", f"{section.dataset} / {section.setting}: class-IL FAA (%), mean ± std over seeds",
                  table.to_string(index=False)]
        if not section.grid.empty:
            lines.append(f"{GRID_MARK} {GRID_NOTE}; see {tables_dir(report) / (section.name + '_grid.csv')}")
        if not section.paired.empty:
            lines += ["", f"Paired by seed: class-IL FAA difference from {section.paired['baseline'].iloc[0]}"
                          " (*: its 95% interval excludes 0)",
                      paired.display_frame(section.paired, section.row_keys, bold=False)
                      .drop(columns="baseline").to_string(index=False),
                      *paired.power_lines(section.paired, section.row_keys)]
    if not report.missing.empty:
        lines += ["", f"Not finished ({len(report.missing)}), see {report.out_dir / 'missing.csv'}:"]
        for row in report.missing.head(max_missing).itertuples(index=False):
            err = f"  {row.error}" if present(row.error) else ""
            log = f"  (log: {row.log_file})" if present(row.log_file) else ""
            lines.append(f"  {row.status:<8} {row.trial_id}{err}{log}")
        if len(report.missing) > max_missing:
            lines.append(f"  ... and {len(report.missing) - max_missing} more")
    lines += ["", "Files:"] + [f"  {p}" for p in _listed_files(report)]
    return "\n".join(lines)


def _listed_files(report: Report) -> list[Path]:
    """Top-level files, main tables, and the plots folder: the paths worth printing."""
    tops = [p for p in report.files if p.parent == report.out_dir]
    mains = [p for p in report.files if p.parent == tables_dir(report) and p.suffix == ".md"]
    return tops + mains + ([report.out_dir / "plots"] if report.plots else [])
