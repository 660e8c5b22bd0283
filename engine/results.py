"""result.json (the contract with the orchestrator, docs/architecture.md) and checkpoints.

Both are written atomically: a temp file in the same directory, fsync, then rename, so a
crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

SCHEMA = "normsweep.result/1"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"


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


def read_result(out_dir: Path) -> dict | None:
    """The finished result in `out_dir`, or None when there is none (or it is not ours)."""
    path = Path(out_dir) / RESULT_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and payload.get("schema") == SCHEMA else None


def save_checkpoint(out_dir: Path, state: dict) -> Path:
    path = Path(out_dir) / CHECKPOINT_FILE
    import torch   # here, not above: the report reads result.json without torch

    atomic_write(path, lambda fh: torch.save(state, fh), mode="wb")
    return path


def load_checkpoint(out_dir: Path) -> dict | None:
    path = Path(out_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
