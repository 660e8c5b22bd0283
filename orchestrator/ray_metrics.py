"""The sweep's Ray metrics (`ray.util.metrics`), exported on each node's Prometheus endpoint
(`ray.nodes()[i]["MetricsExportPort"]`) with Ray's `ray_` prefix:

  ray_normsweep_trials{sweep, state}           trials finished / failed / running / pending (driver)
  ray_normsweep_gpu_trials{sweep, gpu}         trials packed on a GPU now (driver; when trials get one)
  ray_normsweep_tasks_finished_total{sweep}    CL tasks finished (counter, from the trials)
  ray_normsweep_trial_steps_per_s{...trial}    a trial's optimizer steps per second so far
  ray_normsweep_trial_task{...trial}           the task a trial is on (1-based)
  ray_normsweep_trial_class_il_acc{...trial}   its class-IL accuracy after its last finished task

A trial's tags: sweep, run (run name), dataset, method, norm, seed. A metric is a convenience:
if Ray cannot make one, nothing is recorded and the sweep runs on.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from engine.events import TaskEnd
from orchestrator.tune_config import TrialPayload

TRIAL_TAGS = ("sweep", "run", "dataset", "method", "norm", "seed")
_made: dict[str, Any] = {}   # one metric object per name and process (a reused trial process makes many trials)


def _metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...]):
    if name not in _made:
        _made[name] = None
        with contextlib.suppress(Exception):
            from ray.util import metrics

            _made[name] = getattr(metrics, kind)(name, description=description, tag_keys=tag_keys)
    return _made[name]


def _set(metric, value: float, tags: dict[str, str]) -> None:
    if metric is not None:
        with contextlib.suppress(Exception):
            metric.set(float(value), tags=tags)


class SweepGauges:
    """Driver side: the board's counts (at most once a second) and the trials per GPU."""

    STATES = {"done": "finished", "failed": "failed", "running": "running", "pending": "pending"}

    def __init__(self, sweep: str):
        self.sweep, self._last, self._per_gpu = sweep, 0.0, {}

    def __getstate__(self):  # Tune pickles its callbacks; metric objects stay in this process
        return {"sweep": self.sweep, "_last": 0.0, "_per_gpu": dict(self._per_gpu)}

    def counts(self, counts: dict[str, int], force: bool = False) -> None:
        if not force and time.monotonic() - self._last < 1.0:
            return
        self._last = time.monotonic()
        trials = _metric("Gauge", "normsweep_trials", "trials of the sweep by state", ("sweep", "state"))
        for state, n in counts.items():
            _set(trials, n, {"sweep": self.sweep, "state": self.STATES.get(state, state)})

    def gpu(self, gpu: str | None, change: int) -> None:
        """A trial given GPU `gpu` (its UUID or label) started (+1) or ended (-1)."""
        if not gpu:
            return
        self._per_gpu[gpu] = max(0, self._per_gpu.get(gpu, 0) + change)
        _set(_metric("Gauge", "normsweep_gpu_trials", "trials packed on a GPU", ("sweep", "gpu")),
             self._per_gpu[gpu], {"sweep": self.sweep, "gpu": gpu})


class TrialGauges:
    """Trial side: fed by the trainable's progress events."""

    def __init__(self, trial: TrialPayload):
        c = trial.config
        self.sweep = Path(trial.sweep_dir).name
        self.tags = {"sweep": self.sweep, "run": trial.run_name, "dataset": c["dataset"],
                     "method": c["method"], "norm": c["norm"], "seed": str(c["seed"])}

    def on_task(self, task: int) -> None:
        _set(_metric("Gauge", "normsweep_trial_task", "the task a trial is on (1-based)", TRIAL_TAGS),
             task, self.tags)

    def task_end(self, event: TaskEnd) -> None:
        self.on_task(event.task + 1)
        _set(_metric("Gauge", "normsweep_trial_class_il_acc", "class-IL accuracy after the last task",
                     TRIAL_TAGS), event.class_il_acc, self.tags)
        if event.steps_per_s is not None:
            _set(_metric("Gauge", "normsweep_trial_steps_per_s", "optimizer steps per second so far",
                         TRIAL_TAGS), event.steps_per_s, self.tags)
        tasks = _metric("Counter", "normsweep_tasks_finished", "CL tasks finished", ("sweep",))
        if tasks is not None:
            with contextlib.suppress(Exception):
                tasks.inc(1.0, tags={"sweep": self.sweep})
