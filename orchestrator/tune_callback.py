"""The driver side of a sweep's trials: what each start, result, retry and failure does to
the progress board, the sweep's Ray metrics, the fail-fast rule and the sweep's outcome."""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune

from engine.errors import one_line
from orchestrator.failfast import FailFast, Tripped, is_crash
from orchestrator.ledger import record_error
from orchestrator.progress import ProgressBoard
from orchestrator.ray_metrics import SweepGauges
from orchestrator.tune_config import TrialPayload, payload_of


@dataclass
class Failure:
    trial_id: str
    run_name: str
    error: str
    log_file: str | None


PLACEMENT_KEYS = ("node_id", "cuda_visible_devices", "pid", "worker_rss_mib", "timestamp", "status")


@dataclass
class SweepOutcome:
    finished: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    stopped: Tripped | None = None       # --fail_fast stopped the sweep
    not_started: int = 0                 # trials left pending by that stop
    # trial id -> where and when its last report came from (PLACEMENT_KEYS only: the metrics are
    # in result.json, and a whole Tune result per trial would grow the launcher by ~2 KB a trial)
    last_results: dict[str, dict] = field(default_factory=dict)
    makespan_s: float = 0.0


def trial_error(exc: BaseException | str | None) -> str:
    """What a trial failed of, as one line: the user error's type and message (not Ray's
    wrapper), a traceback's last "SomeError: message" line, or what Ray says."""
    from ray.exceptions import RayActorError

    if exc is None:
        return "unknown error"
    if isinstance(exc, str):  # a traceback's text: its "SomeError: message" line, else the first
        lines = [ln.strip() for ln in exc.splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", ln)]
        return one_line((errors or lines or ["unknown error"])[-1 if errors else 0])
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:   # RayTaskError wraps the user's
        return trial_error(cause)
    if isinstance(exc, RayActorError):
        return f"{type(exc).__name__}: the trial process died (killed, out of host memory, or crashed)"
    text = str(exc).strip().splitlines()
    return one_line(f"{type(exc).__name__}: {text[0] if text else ''}")


class SweepCallback(tune.Callback):
    """Driver side: feeds the progress board and the sweep's Ray metrics, and records crashes
    in the sweep directory."""

    def __init__(self, board: ProgressBoard, outcome: SweepOutcome, stopper: FailFast, gauges: SweepGauges):
        self.board, self.outcome, self.stopper, self.gauges = board, outcome, stopper, gauges

    @staticmethod
    def _info(trial) -> TrialPayload:
        return payload_of(trial.config)

    def on_step_end(self, iteration, trials, **info):
        self.board.tick()
        self.gauges.counts(self.board.counts())

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._info(trial)
        self.board.started_trial(t.trial_id)
        self.gauges.gpu(t.gpu_uuid, +1)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = self._info(trial).trial_id
        self.outcome.last_results[tid] = {k: result[k] for k in PLACEMENT_KEYS if k in result}
        self.board.reported(tid, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = self._info(trial)
        self.gauges.gpu(t.gpu_uuid, -1)
        last = trial.last_result or {}
        if last.get("status") == "failed":  # TrainingError: the trial wrote error.json itself
            self._failed(t, str(last.get("error")), why="not retried")
            self.stopper.failed(str(last.get("error")), t.log_file, bool(last.get("config_error")))
        else:
            self.board.ended(t.trial_id, ok=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        t = self._info(trial)
        self.gauges.gpu(t.gpu_uuid, -1)   # it starts again
        self.board.retried(f"retrying {t.run_name} (failure {trial.num_failures}): "
                           f"{trial_error(_error_of(trial))}")

    def on_trial_error(self, iteration, trials, trial, **info):
        t = self._info(trial)
        self.gauges.gpu(t.gpu_uuid, -1)
        exc = _error_of(trial)
        error = trial_error(exc)
        record_error(t.out_dir, t.trial_id, error, t.log_file)
        self._failed(t, error, why=f"{trial.num_failures} attempt(s)")
        self.stopper.failed(error, t.log_file, not is_crash(exc))

    def _failed(self, t: TrialPayload, error: str, why: str) -> None:
        self.outcome.failed.append(Failure(t.trial_id, t.run_name, error, t.log_file))
        self.board.ended(t.trial_id, ok=False,
                         line=f"FAILED {t.run_name} ({why}): {error}\n  log: {t.log_file}")


def _error_of(trial) -> BaseException | str | None:
    """The trial's last error, read from the driver-side copies Tune has just written
    (its storage copies are synced later)."""
    import ray.cloudpickle as cloudpickle

    with contextlib.suppress(Exception):
        if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
            with open(trial.pickled_error_file, "rb") as fh:
                return cloudpickle.load(fh)
    with contextlib.suppress(Exception):
        if trial.error_file and os.path.exists(trial.error_file):
            last = Path(trial.error_file).read_text().rsplit("Failure #", 1)[-1]
            return last.split("\n", 1)[-1]  # drop "N (occurred at ...)"
    return None
