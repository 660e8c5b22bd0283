"""Trial directories -> the trials frame: one flat row per trial, any status.

The files and their validation are engine.results' (the contract); here a bad file becomes a
ReportWarning naming it and a "corrupt" (or partly read) trial instead of an error.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from engine.results import (CONFIG_FILE, ERROR_FILE, METRICS, RESULT_FILE, SCENARIOS, load_json, load_result,
                            upgrade_config)
from orchestrator.report.base import METRIC_COLUMNS, ReportError, ReportWarning, sort_rows

# Dict-valued config fields become one column per option: norm_args.kappa -> norm.kappa.
OPTION_PREFIXES = {"norm_args": "norm.", "method_args": "method.", "data_args": "data."}
# Not part of what a config computes: seed is what we average over; data_root is where data lives.
# (device is not a config column: trials.csv's `device` is where the trial actually ran, and its
# kind, `device_kind`, is grouped on: CPU and GPU runs of one config do not compute the same numbers.)
NOT_GROUPED = ("seed", "data_root")
HEAD_COLUMNS = ("trial_id", "status", "dataset", "setting", "method", "buffer_mode", "buffer_size",
                "norm", "norm_options", "device_kind")
RUNTIME_COLUMNS = ("wall_time_s", "steps", "steps_per_s", "device", "device_uuid", "run_name", "log_file",
                   "error", "trial_dir")


def scan_sweep(sweep_dir: Path) -> pd.DataFrame:
    """One row per trial directory (any subdirectory holding config/result/error.json)."""
    if not sweep_dir.is_dir():
        raise ReportError(f"no such sweep directory: {sweep_dir}")
    records = [r for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir())
               if (r := read_trial(d)) is not None]
    return _trials_frame(_drop_duplicates(records))


def read_trial(trial_dir: Path) -> dict[str, Any] | None:
    """The trial's flat row, or None when the directory is not a trial directory."""
    paths = {name: trial_dir / name for name in (CONFIG_FILE, RESULT_FILE, ERROR_FILE)}
    if not any(p.exists() for p in paths.values()):
        return None
    planned = _read_side_file(paths[CONFIG_FILE])
    failure = _read_side_file(paths[ERROR_FILE])
    result, problem = None, None
    if paths[RESULT_FILE].exists():
        try:
            result = load_result(paths[RESULT_FILE])
        except ValueError as exc:  # bad JSON or not our schema: skip it, loudly
            problem = f"unreadable {RESULT_FILE}: {exc}"
            warnings.warn(f"skipping {paths[RESULT_FILE]}: {exc}", ReportWarning, stacklevel=2)

    if result is not None:
        status = "finished"
    elif failure is not None:
        status = "failed"
    else:
        status = "corrupt" if problem else "pending"
    planned, failure_info = planned or {}, failure or {}
    config = result["config"] if result else planned.get("config")
    config = upgrade_config(config) if isinstance(config, dict) else {}   # a pending trial of an older sweep
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
    return (failure or {}).get("error") or (f"unreadable {ERROR_FILE}" if failure == {} else None)


def _read_side_file(path: Path) -> dict[str, Any] | None:
    """config.json / error.json: None if absent, {} (with a warning) if unreadable."""
    if not path.exists():
        return None
    try:
        return load_json(path)
    except ValueError as exc:
        warnings.warn(f"ignoring {path}: {exc}", ReportWarning, stacklevel=3)
        return {}


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


def _first(*values: Any) -> Any:
    return next((v for v in values if v), None)


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
    return sort_rows(df, [c for c in ("dataset", "setting", "method", "buffer_size", "norm",
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


def group_columns(trials: pd.DataFrame) -> list[str]:
    """The config columns a summary row groups on: all but seed and data_root."""
    return [c for c in config_columns(trials) if c not in NOT_GROUPED]
