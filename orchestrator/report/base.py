"""What every step of the report shares: its errors, the records passed from step to step
(Report, Section), the metric column names and the small cell-value helpers."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from engine.results import METRICS, SCENARIOS

METRIC_COLUMNS = tuple(f"{s}_{m}" for s in SCENARIOS for m in METRICS)
MAIN_METRIC = "class_il_faa"
DEFAULT_BASELINE = "bn"
GRID_MARK = "†"
GRID_NOTE = "best grid point by mean class-IL FAA: chosen on the test metric, as the paper's grid search"
STATUSES = ("finished", "failed", "pending", "corrupt")


class ReportError(ValueError):
    """Bad input for a report (no such directory, no finished trial); the message is one line."""


class ReportWarning(UserWarning):
    """A file of the sweep was skipped or only partly read."""


@dataclass
class Section:
    """One dataset x setting: the table cells (best grid point for gridded layers) and the choices."""
    dataset: str
    setting: str
    row_keys: list[str]        # method, buffer_size, plus any other config column varying inside them
    cells: pd.DataFrame        # summary rows, one per table row x norm
    grid: pd.DataFrame         # the chosen grid point per table row x gridded norm (may be empty)
    values: pd.DataFrame       # per-seed metrics by (_key, seed): what pairing aligns on
    paired: pd.DataFrame       # orchestrator.paired.paired_table against the baseline (may be empty)

    @property
    def name(self) -> str:
        return slug(f"{self.dataset}_{self.setting}")


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
        return status_counts(self.trials)


def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    statuses = trials["status"] if "status" in trials else pd.Series(dtype=object)
    return {s: int((statuses == s).sum()) for s in STATUSES}


def sort_rows(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Sort by config columns that may mix types (text columns compare as text)."""
    def key(s: pd.Series) -> pd.Series:
        return s if pd.api.types.is_numeric_dtype(s) else s.map(lambda v: "" if not present(v) else str(v))
    return df.sort_values(cols, key=key, kind="stable") if cols else df


def norm_order(norms: Iterable[str]) -> list[str]:
    return sorted(norms, key=lambda n: (n != "bn", n))  # the BatchNorm baseline first


def present(value: Any) -> bool:
    """Not None/NaN (pandas turns missing cells into NaN)."""
    if isinstance(value, (float, np.floating)):
        return not math.isnan(value)
    return value is not None and value is not pd.NA


def fmt_value(value: Any) -> str:
    """200.0 -> '200' (int columns turn float when a pending trial lacks the field)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return "" if not present(value) else str(value)


def as_tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text)
