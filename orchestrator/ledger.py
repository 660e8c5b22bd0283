"""The sweep directory on disk: what is planned, done and failed (the report module reads it).

    <results_dir>/<sweep>/<trial_id>/config.json   written when the trial is planned
                                    /result.json   written by the engine: the only proof of done
                                    /error.json    the trial failed: {"trial_id", "error", "log_file"}
                                    /checkpoint.pt the engine's last task boundary (while running)
    <results_dir>/<sweep>/_logs/     one log file per trial (default --logdir)
    <results_dir>/<sweep>/_tune/     Ray Tune's experiment state and task-boundary checkpoints
    <results_dir>/<sweep>/_wandb/    W&B run directories (offline runs wait here for `wandb sync`)

Directories starting with "_" are not trials. All writes are atomic (temp file + rename). The
file names, readers and writers are engine.results' (the contract the engine and the report share).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, one_line
from engine.results import CONFIG_FILE, ERROR_FILE, probe_writable, read_json, read_result, write_json


class SweepDir:
    def __init__(self, results_dir: str | Path, name: str):
        if not name or "/" in name or name.startswith((".", "_")):
            raise ConfigError(f"--name {name!r}: use a plain directory name (no '/', not starting with '.' or '_')")
        self.root = Path(results_dir).expanduser().resolve() / name
        self.name = name

    # ---- layout -----------------------------------------------------------------------------
    def trial_dir(self, trial_id: str) -> Path:
        return self.root / trial_id

    @property
    def logs(self) -> Path:
        return self.root / "_logs"

    @property
    def tune(self) -> Path:
        return self.root / "_tune"

    @property
    def wandb(self) -> Path:
        return self.root / "_wandb"

    def check_writable(self) -> None:
        """One line, before anything is written, when the results directory cannot be written.
        Nothing is created: a temp file in the nearest existing folder is the probe."""
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        try:
            probe_writable(existing)
        except OSError as exc:
            raise ConfigError(f"results directory {str(self.root)!r} is not writable: "
                              f"{exc.strerror or exc}") from None

    # ---- state ------------------------------------------------------------------------------
    def is_done(self, trial_id: str) -> bool:
        result = read_result(self.trial_dir(trial_id))
        return result is not None and result.get("trial_id") == trial_id

    def prune_tune_checkpoints(self) -> int:
        """Remove Tune's task-boundary checkpoints of every trial with a finished result.json,
        whichever launch wrote them (one killed with -9 never pruned its own). Returns how many."""
        pruned = 0
        for ckpt in self.tune.glob("*/*/checkpoint_*"):  # _tune/<launch>/<trial_id>/checkpoint_N
            if ckpt.is_dir() and self.is_done(ckpt.parent.name):
                shutil.rmtree(ckpt, ignore_errors=True)
                pruned += 1
        return pruned

    def record_planned(self, trial_id: str, run_name: str, config: dict[str, Any], log_file: str | None) -> None:
        write_json(self.trial_dir(trial_id) / CONFIG_FILE,
                   {"trial_id": trial_id, "run_name": run_name, "config": config, "log_file": log_file})

    def planned(self, trial_id: str) -> dict[str, Any] | None:
        return read_json(self.trial_dir(trial_id) / CONFIG_FILE)


def record_error(trial_dir: str | Path, trial_id: str, error: str, log_file: str | None) -> None:
    """error.json for a failed trial (module-level: the trial process writes it too)."""
    write_json(Path(trial_dir) / ERROR_FILE,
               {"trial_id": trial_id, "error": one_line(error, limit=500), "log_file": log_file})


def clear_error(trial_dir: str | Path) -> None:
    """A trial that later succeeded is not failed: its stale error.json goes."""
    (Path(trial_dir) / ERROR_FILE).unlink(missing_ok=True)


def read_error(trial_dir: str | Path) -> dict[str, Any] | None:
    return read_json(Path(trial_dir) / ERROR_FILE)
