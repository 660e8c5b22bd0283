"""Sweep results on disk -> trials.csv, summary.csv, paper-style tables, PNG plots, text summary.

Reads `results/<sweep>/<trial_id>/` directories (docs/architecture.md):
  config.json  written when the trial is planned   -> pending until one of the two below exists
  result.json  schema "normsweep.result/1"         -> finished (the only proof a trial is done)
  error.json   {"trial_id", "error", "log_file"}   -> failed
A result.json without config.json (engine run by hand) counts. A result.json that cannot be read
or is not ours is skipped with a warning naming the file; its trial is listed as "corrupt".

Writes, under the output directory (the sweep directory unless told otherwise):
  trials.csv   one row per trial directory: flattened config, status, metrics, runtime
  summary.csv  one row per config over seeds: <metric>_mean, <metric>_std, <metric>_n
  missing.csv  trials that did not finish: trial id, status, error, log file
  tables/<dataset>_<setting>[_task_il_faa|_class_il_ffm].{csv,md}  and  ..._grid.{csv,md}
  tables/<dataset>_<setting>_paired.{csv,md}  every layer minus the baseline, paired by seed
  plots/<dataset>_<setting>_<model>_buf<size>.png, plots/<dataset>_<setting>_final_class_il_faa.png,
  plots/<dataset>_<setting>_paired.png

CLI: python -m orchestrator.report results/<sweep> [--out DIR] [--baseline LAYER]
(exit 2 with one line on bad input). Imports pandas, numpy and (in orchestrator.paired) scipy;
matplotlib is imported inside the plotting functions.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from engine.results import SCHEMA
from orchestrator import paired

SCENARIOS = ("class_il", "task_il")
METRICS = ("faa", "caa", "ffm", "bwt")
METRIC_COLUMNS = tuple(f"{s}_{m}" for s in SCENARIOS for m in METRICS)
MAIN_METRIC = "class_il_faa"
# (metric, table file suffix, higher is better)
TABLE_METRICS = (("class_il_faa", "", True), ("task_il_faa", "_task_il_faa", True),
                 ("class_il_ffm", "_class_il_ffm", False))
REQUIRED_RESULT = ("trial_id", "status", "config", "metrics", "acc_matrix")
REQUIRED_CONFIG = ("dataset", "setting", "model", "norm", "buffer_size", "seed")
# Dict-valued config fields become one column per option: norm_args.kappa -> norm.kappa.
OPTION_PREFIXES = {"norm_args": "norm.", "method_args": "method.", "data_args": "data."}
# Not part of what a config computes: seed is what we average over; data_root is where data lives.
# (device is not a config column: trials.csv's `device` is where the trial actually ran, and its
# kind, `device_kind`, is grouped on: CPU and GPU runs of one config do not compute the same numbers.)
NOT_GROUPED = ("seed", "data_root")
HEAD_COLUMNS = ("trial_id", "status", "dataset", "setting", "model", "buffer_mode", "buffer_size",
                "norm", "norm_options", "device_kind")
RUNTIME_COLUMNS = ("wall_time_s", "steps", "steps_per_s", "device", "device_uuid", "run_name", "log_file",
                   "error", "trial_dir")
MISSING_COLUMNS = ("trial_id", "status", "error", "log_file", "dataset", "setting", "model",
                   "buffer_size", "norm", "norm_options", "seed", "trial_dir")
GRID_MARK = "†"
GRID_NOTE = "best grid point by mean class-IL FAA: chosen on the test metric, as the paper's grid search"
DEFAULT_BASELINE = "bn"
NO_WINNER = "no clear winner"
WINNER_NOTE = ("bold: the row's best layer beats every other layer of the row, the runner-up included, in "
               "a paired t-test over their shared seeds (95% interval excludes 0); otherwise "
               f"'{NO_WINNER}'")
PAIRED_NOTE = ("layer minus baseline per shared seed (a seed fixes the class order); bold: the 95% t "
               "interval excludes 0, per comparison, uncorrected; Wilcoxon from 6 pairs; "
               f"{GRID_MARK}: the grid point the tables show, chosen on this metric, so its difference "
               f"is optimistic; seeds for {paired.DETECT:g} pts: seeds a paired t-test needs to detect a "
               f"{paired.DETECT:g}-point difference at {paired.POWER:.0%} power given this spread")


class ReportError(ValueError):
    """Bad input for a report (no such directory, no finished trial); the message is one line."""


class ReportWarning(UserWarning):
    """A file of the sweep was skipped or only partly read."""


@dataclass
class Section:
    """One dataset x setting: the table cells (best grid point for gridded layers) and the choices."""
    dataset: str
    setting: str
    row_keys: list[str]        # model, buffer_size, plus any other config column varying inside them
    cells: pd.DataFrame        # summary rows, one per table row x norm
    grid: pd.DataFrame         # the chosen grid point per table row x gridded norm (may be empty)
    values: pd.DataFrame       # per-seed metrics by (_key, seed): what pairing aligns on
    paired: pd.DataFrame       # orchestrator.paired.paired_table against the baseline (may be empty)

    @property
    def name(self) -> str:
        return _slug(f"{self.dataset}_{self.setting}")


@dataclass
class Report:
    sweep_dir: Path
    out_dir: Path
    trials: pd.DataFrame       # one row per trial directory, any status
    summary: pd.DataFrame      # one row per config (over seeds), finished trials only
    sections: list[Section]
    missing: pd.DataFrame      # trials not finished
    files: list[Path] = field(default_factory=list)     # every file written, CSV/MD and PNG
    plots: list[Path] = field(default_factory=list)
    figures: dict[Path, Any] = field(default_factory=dict)  # path -> matplotlib Figure (keep_figures)

    def counts(self) -> dict[str, int]:
        return _status_counts(self.trials)


# ---- public API ---------------------------------------------------------------------------

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
    counts = _status_counts(trials)
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
            lines.append(f"{GRID_MARK} {GRID_NOTE}; see {_tables_dir(report) / (section.name + '_grid.csv')}")
        if not section.paired.empty:
            lines += ["", f"Paired by seed: class-IL FAA difference from {section.paired['baseline'].iloc[0]}"
                          " (*: its 95% interval excludes 0)",
                      paired.display_frame(section.paired, section.row_keys, bold=False)
                      .drop(columns="baseline").to_string(index=False),
                      *paired.power_lines(section.paired, section.row_keys)]
    if not report.missing.empty:
        lines += ["", f"Not finished ({len(report.missing)}), see {report.out_dir / 'missing.csv'}:"]
        for row in report.missing.head(max_missing).itertuples(index=False):
            err = f"  {row.error}" if _present(row.error) else ""
            log = f"  (log: {row.log_file})" if _present(row.log_file) else ""
            lines.append(f"  {row.status:<8} {row.trial_id}{err}{log}")
        if len(report.missing) > max_missing:
            lines.append(f"  ... and {len(report.missing) - max_missing} more")
    lines += ["", "Files:"] + [f"  {p}" for p in _listed_files(report)]
    return "\n".join(lines)


# ---- reading ------------------------------------------------------------------------------

def scan_sweep(sweep_dir: Path) -> pd.DataFrame:
    """One row per trial directory (any subdirectory holding config/result/error.json)."""
    if not sweep_dir.is_dir():
        raise ReportError(f"no such sweep directory: {sweep_dir}")
    records = [r for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir())
               if (r := read_trial(d)) is not None]
    return _trials_frame(_drop_duplicates(records))


def read_trial(trial_dir: Path) -> dict[str, Any] | None:
    """The trial's flat row, or None when the directory is not a trial directory."""
    paths = {name: trial_dir / f"{name}.json" for name in ("config", "result", "error")}
    if not any(p.exists() for p in paths.values()):
        return None
    planned = _read_side_file(paths["config"])
    failure = _read_side_file(paths["error"])
    result, problem = None, None
    if paths["result"].exists():
        try:
            result = load_result(paths["result"])
        except ValueError as exc:  # bad JSON or not our schema: skip it, loudly
            problem = f"unreadable result.json: {exc}"
            warnings.warn(f"skipping {paths['result']}: {exc}", ReportWarning, stacklevel=2)

    if result is not None:
        status = "finished"
    elif failure is not None:
        status = "failed"
    else:
        status = "corrupt" if problem else "pending"
    planned, failure_info = planned or {}, failure or {}
    config = result["config"] if result else planned.get("config")
    config = config if isinstance(config, dict) else {}
    kind = device_kind(result.get("device")) if result else None
    row: dict[str, Any] = {
        "trial_id": _first(result and result.get("trial_id"), planned.get("trial_id"),
                           failure_info.get("trial_id"), trial_dir.name),
        "status": status,
        **flatten_config(config),
        "norm_options": _options_label(config.get("norm_args")),
        "device_kind": kind,
        "device": result.get("device") if result else config.get("device"),
        "device_uuid": result.get("device_uuid") if result else None,
        "run_name": planned.get("run_name"),
        "log_file": _first(planned.get("log_file"), failure_info.get("log_file"),
                           result and result.get("log_file")),
        "error": _error_text(status, failure, problem),
        "trial_dir": str(trial_dir),
        "_key": _group_key(config, kind),
        "_curve": None,
    }
    if result is not None:
        row.update(_result_fields(result))
    return row


def _error_text(status: str, failure: dict[str, Any] | None, problem: str | None) -> str | None:
    if status != "failed":
        return problem
    return (failure or {}).get("error") or ("unreadable error.json" if failure == {} else None)


def load_result(path: Path) -> dict[str, Any]:
    """A validated result.json; ValueError (one line) when it is not a normsweep.result/1 file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED_RESULT if k not in data]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    if data["status"] != "finished":
        raise ValueError(f"status is {data['status']!r}, expected 'finished'")
    config = data["config"]
    if not isinstance(config, dict) or any(k not in config for k in REQUIRED_CONFIG):
        raise ValueError(f"config lacks one of {', '.join(REQUIRED_CONFIG)}")
    for scenario in SCENARIOS:
        _check_metrics(data["metrics"], scenario)
        _check_matrix(data["acc_matrix"], scenario)
    return data


def _check_metrics(metrics: Any, scenario: str) -> None:
    block = metrics.get(scenario) if isinstance(metrics, dict) else None
    if not isinstance(block, dict):
        raise ValueError(f"metrics.{scenario} missing")
    for m in METRICS:
        if m not in block or not (block[m] is None or _is_number(block[m])):
            raise ValueError(f"metrics.{scenario}.{m} missing or not a number")


def _check_matrix(matrices: Any, scenario: str) -> None:
    rows = matrices.get(scenario) if isinstance(matrices, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"acc_matrix.{scenario} missing or empty")
    for i, row in enumerate(rows):  # lower triangle: after task i, tasks 0..i
        if not isinstance(row, list) or len(row) < i + 1 or not all(_is_number(v) for v in row[:i + 1]):
            raise ValueError(f"acc_matrix.{scenario} row {i} is not {i + 1} numbers")


def _read_side_file(path: Path) -> dict[str, Any] | None:
    """config.json / error.json: None if absent, {} (with a warning) if unreadable."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"ignoring {path}: not valid JSON ({exc})", ReportWarning, stacklevel=3)
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"ignoring {path}: not a JSON object", ReportWarning, stacklevel=3)
        return {}
    return data


def _result_fields(result: dict[str, Any]) -> dict[str, Any]:
    row = {f"{s}_{m}": result["metrics"][s][m] for s in SCENARIOS for m in METRICS}
    row.update({k: result.get(k) for k in ("wall_time_s", "steps", "steps_per_s")})
    row["_curve"] = seen_task_average(result["acc_matrix"]["class_il"])
    return row


def seen_task_average(matrix: list[list[float]]) -> list[float]:
    """Accuracy after each task, averaged over the tasks seen so far: mean_{j<=i} A[i][j]."""
    return [float(np.mean(row[:i + 1])) for i, row in enumerate(matrix)]


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """Config -> flat columns: option dicts as `norm.kappa`, lists/dicts as JSON text; no device."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "device":
            continue
        if isinstance(value, dict):
            prefix = OPTION_PREFIXES.get(key, f"{key}.")
            flat.update({prefix + k: _cell_value(v) for k, v in value.items()})
        else:
            flat[key] = _cell_value(value)
    return flat


def _cell_value(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value


def _group_key(config: dict[str, Any], kind: str | None) -> str:
    """Same text for the same config (and device kind) up to the seed: the summary groups on it."""
    flat = {**flatten_config(config), "device_kind": kind}
    return json.dumps({k: v for k, v in flat.items() if k not in NOT_GROUPED and v is not None},
                      sort_keys=True, default=str)


def device_kind(device: Any) -> str | None:
    """result.json's device ("cpu", "cuda:0 (NVIDIA H100 80GB HBM3)") -> "cpu" or "cuda"."""
    return str(device).split(":")[0].split(" ")[0] or None if device else None


def _options_label(options: Any) -> str:
    if not isinstance(options, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


def _drop_duplicates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A finished trial id seen twice (a copied directory) would count a seed twice: keep one."""
    seen: dict[str, str] = {}
    kept = []
    for r in records:
        if r["status"] == "finished" and r["trial_id"] in seen:
            warnings.warn(f"skipping {r['trial_dir']}: trial {r['trial_id']} already read from "
                          f"{seen[r['trial_id']]}", ReportWarning, stacklevel=3)
            continue
        if r["status"] == "finished":
            seen[r["trial_id"]] = r["trial_dir"]
        kept.append(r)
    return kept


def _trials_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    df = df.reindex(columns=_ordered_columns(df.columns))
    for col in df.columns:  # keep int fields int (200, not 200.0) where other rows lack them
        values = [r[col] for r in records if r.get(col) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[col] = df[col].astype("Int64")
    for col in (*METRIC_COLUMNS, "wall_time_s", "steps", "steps_per_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if df.empty:
        return df
    return _sorted(df, [c for c in ("dataset", "setting", "model", "buffer_size", "norm",
                                    "norm_options", "seed", "trial_id") if c in df])


def _ordered_columns(columns: Iterable[str]) -> list[str]:
    cols = list(columns)
    known = set(HEAD_COLUMNS) | set(METRIC_COLUMNS) | set(RUNTIME_COLUMNS) | {"seed", "_key", "_curve"}
    prefixed = lambda p: sorted(c for c in cols if c.startswith(p))  # noqa: E731
    other = [c for c in cols if c not in known and not c.startswith(("_", *OPTION_PREFIXES.values()))]
    return [*HEAD_COLUMNS, *prefixed("norm."), "seed", *other, *prefixed("method."),
            *prefixed("data."), *METRIC_COLUMNS, *RUNTIME_COLUMNS, "_key", "_curve"]


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The flattened config columns of trials.csv (norm_options included, device excluded)."""
    non_config = {"trial_id", "status", *METRIC_COLUMNS, *RUNTIME_COLUMNS}
    return [c for c in trials.columns if c not in non_config and not c.startswith("_")]


def _status_counts(trials: pd.DataFrame) -> dict[str, int]:
    statuses = trials["status"] if "status" in trials else pd.Series(dtype=object)
    return {s: int((statuses == s).sum()) for s in ("finished", "failed", "pending", "corrupt")}


# ---- aggregation --------------------------------------------------------------------------

def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials grouped over seeds by every config column except seed and data_root.

    Per metric: <m>_mean, <m>_std (ddof=1, the sample std; NaN -- an empty CSV cell -- when only
    one seed finished) and <m>_n (seeds with a value). Also n_seeds, seeds, mean wall time and
    steps/s, and _key, the group's id linking back to trials.
    """
    done = trials[trials["status"] == "finished"]
    keys = group_columns(trials)
    groups = done.groupby("_key", sort=False)
    out = groups[keys].first()
    out["n_seeds"] = groups.size()
    out["seeds"] = groups["seed"].agg(lambda s: " ".join(str(int(v)) for v in sorted(s)))
    for col in METRIC_COLUMNS:
        out[f"{col}_mean"] = groups[col].mean()
        out[f"{col}_std"] = groups[col].std(ddof=1)
        out[f"{col}_n"] = groups[col].count()
    for col in ("wall_time_s", "steps_per_s"):
        out[f"{col}_mean"] = groups[col].mean()
    return _sorted(out.reset_index(), keys)


def group_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in config_columns(trials) if c not in NOT_GROUPED]


def build_sections(summary: pd.DataFrame, trials: pd.DataFrame,
                   baseline: str = DEFAULT_BASELINE) -> list[Section]:
    keys = group_columns(trials)
    values = paired.seed_values(trials, list(METRIC_COLUMNS))
    sections = []
    for (dataset, setting), part in summary.groupby(["dataset", "setting"], sort=True):
        row_keys = _row_keys(part, keys)
        cells, grid = choose_grid_points(part, row_keys)
        table = paired.paired_table(cells, row_keys, values, baseline, MAIN_METRIC)
        sections.append(Section(str(dataset), str(setting), row_keys, cells, grid, values, table))
    return sections


def _row_keys(part: pd.DataFrame, keys: list[str]) -> list[str]:
    """model, buffer_size, and any other non-norm config column that varies inside one of them
    (e.g. buffer_mode or lr), so no table cell mixes two configs."""
    fixed = ["model", "buffer_size"]
    candidates = [c for c in keys if c not in (*fixed, "dataset", "setting", "norm", "norm_options")
                  and not c.startswith("norm.")]
    by_row = part.groupby(fixed, dropna=False)
    return fixed + [c for c in candidates if by_row[c].nunique(dropna=False).max() > 1]


def choose_grid_points(part: pd.DataFrame, row_keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per table row x norm keep the norm-option setting with the best mean class-IL FAA.

    Ties go to more seeds, then to the first setting in sorted order. `grid_points` counts the
    settings compared; the grid frame lists the rows where there was more than one.
    """
    cell_keys = [*row_keys, "norm"]
    ranked = part.copy()
    ranked["grid_points"] = ranked.groupby(cell_keys, dropna=False)["_key"].transform("size")
    ranked = ranked.sort_values([f"{MAIN_METRIC}_mean", "n_seeds"], ascending=False,
                                na_position="last", kind="stable")
    cells = _sorted(ranked.drop_duplicates(subset=cell_keys, keep="first"), cell_keys)
    grid = cells.loc[cells["grid_points"] > 1, [*cell_keys, "norm_options", "grid_points",
                                                f"{MAIN_METRIC}_mean", f"{MAIN_METRIC}_std",
                                                f"{MAIN_METRIC}_n"]].copy()
    grid["selected_by"] = GRID_NOTE
    return cells.reset_index(drop=True), grid.reset_index(drop=True)


def missing_trials(trials: pd.DataFrame) -> pd.DataFrame:
    rest = trials[trials["status"] != "finished"]
    return rest.reindex(columns=list(MISSING_COLUMNS)).reset_index(drop=True)


# ---- tables -------------------------------------------------------------------------------

def format_table(section: Section, metric: str, higher_better: bool = True,
                 style: str = "csv") -> pd.DataFrame:
    """Rows = section.row_keys, one column per norm, cells 'mean ± std' (2 decimals).

    A cell with one seed shows the mean alone; a cell with fewer seeds than the table's best-covered
    cell gets ' (n=k)'. style 'md' marks grid-chosen cells with †, bolds the row's best layer only
    when it beats every other layer significantly (paired.clear_winner) and adds a 'winner' column
    (that layer or 'no clear winner'); 'text' does the same without bold; 'csv' is plain.
    """
    cells, keys = section.cells, section.row_keys
    norms = _norm_order(cells["norm"].unique())
    max_n = cells[f"{metric}_n"].max()
    rows = []
    for row_vals, group in cells.groupby(keys, dropna=False, sort=False):
        by_norm = {r["norm"]: r for _, r in group.iterrows()}
        winner = None if style == "csv" else paired.clear_winner(group, section.values, metric, higher_better)
        row = {k: _fmt_value(v) for k, v in zip(keys, row_vals)}
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
    if not _present(mean):
        return ""
    text = f"{mean:.2f}" if not _present(std) else f"{mean:.2f} ± {std:.2f}"
    return text + (f" (n={int(n)})" if n < max_n else "")


def _norm_order(norms: Iterable[str]) -> list[str]:
    return sorted(norms, key=lambda n: (n != "bn", n))  # the BatchNorm baseline first


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which we do not require)."""
    def cell(v: Any) -> str:
        return "" if not _present(v) else str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---- writing ------------------------------------------------------------------------------

def write_files(report: Report) -> None:
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(report, report.trials, out / "trials.csv")
    _write_csv(report, report.summary, out / "summary.csv")
    _write_csv(report, report.missing, out / "missing.csv")
    tables = _tables_dir(report)
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


def _tables_dir(report: Report) -> Path:
    return report.out_dir / "tables"


def _listed_files(report: Report) -> list[Path]:
    """Top-level files, main tables, and the plots folder: the paths worth printing."""
    tops = [p for p in report.files if p.parent == report.out_dir]
    mains = [p for p in report.files if p.parent == _tables_dir(report) and p.suffix == ".md"]
    return tops + mains + ([report.out_dir / "plots"] if report.plots else [])


# ---- plots --------------------------------------------------------------------------------

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
    norms = _norm_order(cells["norm"].unique())
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
    ax.set_xticks(x, ["\n".join(_fmt_value(v) for v in _as_tuple(vals)) for vals, _ in rows],
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
    order = {n: i for i, n in enumerate(_norm_order(group["norm"].unique()))}
    return sorted(group.iterrows(), key=lambda item: order[item[1]["norm"]])


def _line_label(row: pd.Series) -> str:
    """The layer's name; a gridded layer also shows its chosen options."""
    return f"{row['norm']} ({row['norm_options']})" if row["grid_points"] > 1 else str(row["norm"])


def _row_title(section: Section, row_vals: Any) -> tuple[str, str]:
    values = dict(zip(section.row_keys, _as_tuple(row_vals)))
    extra = [(k, _fmt_value(v)) for k, v in values.items() if k not in ("model", "buffer_size")]
    model, size = _fmt_value(values["model"]), _fmt_value(values["buffer_size"])
    title = " / ".join([section.dataset, section.setting, model, f"buffer {size}",
                        *(f"{k}={v}" for k, v in extra)])
    stem = "_".join([section.name, model, f"buf{size}", *(f"{k}-{v}" for k, v in extra)])
    return title, _slug(stem)


# ---- small helpers ------------------------------------------------------------------------

def _sorted(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Sort by config columns that may mix types (text columns compare as text)."""
    def key(s: pd.Series) -> pd.Series:
        return s if pd.api.types.is_numeric_dtype(s) else s.map(lambda v: "" if not _present(v) else str(v))
    return df.sort_values(cols, key=key, kind="stable") if cols else df


def _present(value: Any) -> bool:
    """Not None/NaN (pandas turns missing cells into NaN)."""
    if isinstance(value, (float, np.floating)):
        return not math.isnan(value)
    return value is not None and value is not pd.NA


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first(*values: Any) -> Any:
    return next((v for v in values if v), None)


def _fmt_value(value: Any) -> str:
    """200.0 -> '200' (int columns turn float when a pending trial lacks the field)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return "" if not _present(value) else str(value)


def _as_tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text)


# ---- CLI ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.report",
                                     description="Tables and plots of a sweep's results.")
    parser.add_argument("sweep_dir", type=Path, help="results/<sweep>")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: sweep_dir)")
    parser.add_argument("--no-plots", action="store_true", help="write the CSV/MD files only")
    parser.add_argument("--baseline", metavar="LAYER", default=None,
                        help="the layer the paired tables subtract (default bn)")
    args = parser.parse_args(argv)
    try:
        show(args.sweep_dir, args.out, plots=not args.no_plots, baseline=args.baseline)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def show(sweep_dir: str | Path, out_dir: str | Path | None = None, **options: Any) -> Report:
    """build_report, then print its summary; skipped files print as one 'warning: ...' line each
    (not Python's two-line warning with a source line). What the CLI and the launcher call."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", ReportWarning)
        warnings.showwarning = _show_warning
        rep = build_report(sweep_dir, out_dir, **options)
    print(summary_text(rep))
    return rep


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
