"""The result files: the one contract between the engine, the ledger and the report.

    <trial_dir>/config.json    the ledger: the trial is planned   {"trial_id", "run_name", "config", "log_file"}
               /result.json    the engine: the trial is finished  (schema SCHEMA, fields below)
               /error.json     the ledger: the trial failed       {"trial_id", "error", "log_file"}
               /checkpoint.pt  the engine: the last task boundary (while the trial runs)

The file names, the schema version, the fields a result.json must have, and the readers and
atomic writers all live here, nowhere else (docs/architecture.md shows a whole result.json).
Every write is atomic: a temp file in the same directory, fsync, then rename, so a crash
leaves either the old file or the new one, never half of one. No torch at import: the
checkpoint functions import it, so the ledger and the report read these files without it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

SCHEMA = "normsweep.result/2"
# Every schema read, and the config keys earlier ones spelled otherwise: schema 1 called the CL
# method "model" (mammoth's flag). So earlier sweeps stay done; their ids: config.ID_NAMES.
READ_SCHEMAS = ("normsweep.result/1", SCHEMA)
RENAMED_CONFIG_KEYS = {"model": "method"}
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
CHECKPOINT_FILE = "checkpoint.pt"

SCENARIOS = ("class_il", "task_il")       # result["metrics"] and result["acc_matrix"] keys
METRICS = ("faa", "caa", "ffm", "bwt")     # result["metrics"][scenario] keys (ffm, bwt: null for one task)
REQUIRED_RESULT = ("trial_id", "status", "config", "metrics", "acc_matrix")
REQUIRED_CONFIG = ("dataset", "setting", "method", "norm", "buffer_size", "seed")


# ---- writing ------------------------------------------------------------------------------

def probe_writable(folder: Path) -> None:
    """OSError when `folder` (an existing directory) cannot take a new file. The probe is an
    anonymous temp file: nothing is left behind, whatever happens."""
    if not Path(folder).is_dir():
        raise NotADirectoryError(f"{folder} is not a directory")
    tempfile.TemporaryFile(dir=folder).close()


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict) -> None:
    atomic_write(path, lambda fh: json.dump(payload, fh, indent=1, allow_nan=False))


def write_result(out_dir: Path, result: dict) -> Path:
    path = Path(out_dir) / RESULT_FILE
    write_json(path, result)
    return path


# ---- reading ------------------------------------------------------------------------------

def load_json(path: Path) -> dict[str, Any]:
    """A JSON object; ValueError (one line) when the file is absent, unreadable or no object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def read_json(path: Path) -> dict[str, Any] | None:
    """load_json, or None where it would raise (config.json and error.json for the ledger)."""
    try:
        return load_json(path)
    except ValueError:
        return None


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config (result.json's or a planned trial's config.json) with today's keys."""
    return {RENAMED_CONFIG_KEYS.get(k, k): v for k, v in config.items()}


def load_result(path: Path) -> dict[str, Any]:
    """A validated result.json, upgraded to SCHEMA; ValueError (one line) when it is not a
    finished result of a schema in READ_SCHEMAS."""
    data = load_json(path)
    if data.get("schema") not in READ_SCHEMAS:
        raise ValueError(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED_RESULT if k not in data]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    if data["status"] != "finished":
        raise ValueError(f"status is {data['status']!r}, expected 'finished'")
    if isinstance(data["config"], dict):
        data["config"], data["schema"] = upgrade_config(data["config"]), SCHEMA
    config = data["config"]
    if not isinstance(config, dict) or any(k not in config for k in REQUIRED_CONFIG):
        raise ValueError(f"config lacks one of {', '.join(REQUIRED_CONFIG)}")
    for scenario in SCENARIOS:
        _check_metrics(data["metrics"], scenario)
        _check_matrix(data["acc_matrix"], scenario)
    return data


def read_result(out_dir: Path) -> dict[str, Any] | None:
    """The finished result in `out_dir`, or None when there is none (absent, unreadable, not
    ours, or failing load_result): the same test the ledger's "done" and the report's "finished" use."""
    try:
        return load_result(Path(out_dir) / RESULT_FILE)
    except ValueError:
        return None


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- checkpoints --------------------------------------------------------------------------

def save_checkpoint(out_dir: Path, state: dict) -> Path:
    path = Path(out_dir) / CHECKPOINT_FILE
    import torch   # here, not above: the ledger and the report read these files without torch

    atomic_write(path, lambda fh: torch.save(state, fh), mode="wb")
    return path


def load_checkpoint(out_dir: Path) -> dict | None:
    path = Path(out_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
