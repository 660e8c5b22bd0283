"""The trials frame -> summaries over seeds, one Section per dataset x setting (grid point
chosen per cell, paired differences against the baseline) and the trials that did not finish."""
from __future__ import annotations

import pandas as pd

from orchestrator import paired
from orchestrator.report.base import (DEFAULT_BASELINE, GRID_NOTE, MAIN_METRIC, METRIC_COLUMNS, Section,
                                      sort_rows)
from orchestrator.report.load import group_columns

MISSING_COLUMNS = ("trial_id", "status", "error", "log_file", "dataset", "setting", "method",
                   "buffer_size", "norm", "norm_options", "seed", "trial_dir")


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
    return sort_rows(out.reset_index(), keys)


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
    """method, buffer_size, and any other non-norm config column that varies inside one of them
    (e.g. buffer_mode or lr), so no table cell mixes two configs."""
    fixed = ["method", "buffer_size"]
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
    cells = sort_rows(ranked.drop_duplicates(subset=cell_keys, keep="first"), cell_keys)
    grid = cells.loc[cells["grid_points"] > 1, [*cell_keys, "norm_options", "grid_points",
                                                f"{MAIN_METRIC}_mean", f"{MAIN_METRIC}_std",
                                                f"{MAIN_METRIC}_n"]].copy()
    grid["selected_by"] = GRID_NOTE
    return cells.reset_index(drop=True), grid.reset_index(drop=True)


def missing_trials(trials: pd.DataFrame) -> pd.DataFrame:
    rest = trials[trials["status"] != "finished"]
    return rest.reindex(columns=list(MISSING_COLUMNS)).reset_index(drop=True)
