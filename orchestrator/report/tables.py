"""Sections -> paper-style tables (text, markdown, CSV) and the report's CSV/MD files on disk."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator import paired
from orchestrator.report.base import GRID_MARK, GRID_NOTE, Report, Section, fmt_value, norm_order, present

# (metric, table file suffix, higher is better)
TABLE_METRICS = (("class_il_faa", "", True), ("task_il_faa", "_task_il_faa", True),
                 ("class_il_ffm", "_class_il_ffm", False))
NO_WINNER = "no clear winner"
WINNER_NOTE = ("bold: the row's best layer beats every other layer of the row, the runner-up included, in "
               "a paired t-test over their shared seeds (95% interval excludes 0); otherwise "
               f"'{NO_WINNER}'")
PAIRED_NOTE = ("layer minus baseline per shared seed (a seed fixes the class order); bold: the 95% t "
               "interval excludes 0, per comparison, uncorrected; Wilcoxon from 6 pairs; "
               f"{GRID_MARK}: the grid point the tables show, chosen on this metric, so its difference "
               f"is optimistic; seeds for {paired.DETECT:g} pts: seeds a paired t-test needs to detect a "
               f"{paired.DETECT:g}-point difference at {paired.POWER:.0%} power given this spread")


def format_table(section: Section, metric: str, higher_better: bool = True,
                 style: str = "csv") -> pd.DataFrame:
    """Rows = section.row_keys, one column per norm, cells 'mean ± std' (2 decimals).

    A cell with one seed shows the mean alone; a cell with fewer seeds than the table's best-covered
    cell gets ' (n=k)'. style 'md' marks grid-chosen cells with †, bolds the row's best layer only
    when it beats every other layer significantly (paired.clear_winner) and adds a 'winner' column
    (that layer or 'no clear winner'); 'text' does the same without bold; 'csv' is plain.
    """
    cells, keys = section.cells, section.row_keys
    norms = norm_order(cells["norm"].unique())
    max_n = cells[f"{metric}_n"].max()
    rows = []
    for row_vals, group in cells.groupby(keys, dropna=False, sort=False):
        by_norm = {r["norm"]: r for _, r in group.iterrows()}
        winner = None if style == "csv" else paired.clear_winner(group, section.values, metric, higher_better)
        row = {k: fmt_value(v) for k, v in zip(keys, row_vals)}
        for norm in norms:
            r = by_norm.get(norm)
            text = "" if r is None else _cell_text(r, metric, max_n)
            if text and style != "csv" and r["grid_points"] > 1:
                text += f" {GRID_MARK}"
            if text and style == "md" and norm == winner:
                text = f"**{text}**"
            row[norm] = text
        if style != "csv":
            row["winner"] = winner or (NO_WINNER if group[f"{metric}_mean"].notna().sum() > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *norms] + (["winner"] if style != "csv" else []))


def _cell_text(row: pd.Series, metric: str, max_n: float) -> str:
    mean, std, n = row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_n"]
    if not present(mean):
        return ""
    text = f"{mean:.2f}" if not present(std) else f"{mean:.2f} ± {std:.2f}"
    return text + (f" (n={int(n)})" if n < max_n else "")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which we do not require)."""
    def cell(v: Any) -> str:
        return "" if not present(v) else str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_files(report: Report) -> None:
    """trials.csv, summary.csv, missing.csv and every table of every section under tables/."""
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(report, report.trials, out / "trials.csv")
    _write_csv(report, report.summary, out / "summary.csv")
    _write_csv(report, report.missing, out / "missing.csv")
    tables = tables_dir(report)
    tables.mkdir(exist_ok=True)
    for section in report.sections:
        for metric, suffix, higher in TABLE_METRICS:
            base = tables / f"{section.name}{suffix}"
            _write_csv(report, format_table(section, metric, higher, "csv"), base.with_suffix(".csv"))
            title = f"{section.dataset} / {section.setting}: {metric} (%), mean ± std over seeds"
            notes = [WINNER_NOTE] + ([f"{GRID_MARK} {GRID_NOTE}"] if not section.grid.empty else [])
            _write_md(report, title, format_table(section, metric, higher, "md"), base.with_suffix(".md"),
                      note="\n\n".join(notes))
        if not section.grid.empty:
            base = tables / f"{section.name}_grid"
            _write_csv(report, section.grid, base.with_suffix(".csv"))
            _write_md(report, f"{section.dataset} / {section.setting}: chosen grid points",
                      section.grid.round(2), base.with_suffix(".md"))
        if not section.paired.empty:
            base = tables / f"{section.name}_paired"
            _write_csv(report, section.paired, base.with_suffix(".csv"))
            _write_md(report, f"{section.dataset} / {section.setting}: class-IL FAA, paired by seed",
                      paired.display_frame(section.paired, section.row_keys), base.with_suffix(".md"),
                      note="\n\n".join([PAIRED_NOTE, *paired.power_lines(section.paired, section.row_keys)]))


def _write_csv(report: Report, df: pd.DataFrame, path: Path) -> None:
    df.drop(columns=[c for c in df.columns if str(c).startswith("_")]).to_csv(
        path, index=False, encoding="utf-8")  # NaN -> empty cell
    report.files.append(path)


def _write_md(report: Report, title: str, df: pd.DataFrame, path: Path, note: str = "") -> None:
    text = f"### {title}\n\n{to_markdown(df)}" + (f"\n{note}\n" if note else "")
    path.write_text(text, encoding="utf-8")
    report.files.append(path)


def tables_dir(report: Report) -> Path:
    return report.out_dir / "tables"
