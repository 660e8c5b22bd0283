"""Run the pending trials of a sweep on Ray Tune (an initialized Ray: see cluster.session).

Resume is ours, not Tune's: every launch is a fresh Tune experiment over the trials whose
directory has no finished result.json (the ledger), so adding seeds or layers to a named sweep
runs only the new trials, and nothing finished runs twice. Within a launch Tune retries a
crashed trial (FailureConfig), and the engine continues it from its last task-boundary
checkpoint in the trial directory. Tune's own experiment folders live under <sweep>/_tune/ and
are only bookkeeping.

Scale: the launcher's cost per trial must not grow with the sweep. So Tune gets the trials one
at a time from a searcher with a constant-size saved state (PendingTrials), no trial checkpoint
forces an experiment-state rewrite (none is handed to Tune), Tune writes its experiment state
on its own adaptive period (~5% of the driver's time), and a long sweep runs as consecutive
Tune experiments of `trials_per_tuner` trials, so what Tune holds per trial is freed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune import PlacementGroupFactory
from ray.tune.search import Searcher

from engine.errors import one_line
from orchestrator.failfast import FailFast, Tripped, is_crash
from orchestrator.gpu_pool import GpuPool, resource_name
from orchestrator.ledger import SweepDir, clear_error, read_error, record_error
from orchestrator.progress import ProgressBoard
from orchestrator.ray_metrics import SweepGauges
from orchestrator.sweep import PlannedTrial
from orchestrator.tune_config import TrialPayload, payload_of, tune_config
from orchestrator import tracking

# Tune's console output, its automatic CSV/TensorBoard loggers and its Ctrl-C handler give way
# to ours (progress line, the sweep directory, exit status 130); its JSON logger is kept.
TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
            "TUNE_DISABLE_SIGINT_HANDLER": "1", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@dataclass
class RunOptions:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0          # already fitted to the cluster (cluster.fit_trial_resources)
    max_failures: int = 2
    coldsecs: float = 0.0
    logdir: Path | None = None           # None: <sweep>/_logs
    wandb_mode: str = "disabled"         # online | offline | disabled (tracking.choose_mode)
    wandb_project: str = "CL"
    reuse_actors: bool = True            # one process runs many trials: no interpreter start per trial
    fail_fast: int = 3                   # stop after this many trials fail the same way (0: never)
    progress_every_s: float = 30.0
    # Trials per Tune experiment (0: max(1000, 50 x the trials the cluster runs at once)). Tune
    # keeps every trial it has made in memory (~100 KB each: its metrics' running statistics,
    # its JSON state) until the experiment ends; a long sweep runs as consecutive experiments so
    # the launcher's memory stays bounded. The cost: at each boundary the last trials finish
    # while the next experiment starts (~1/100 of a slot's time per boundary at the default).
    trials_per_tuner: int = 0
    # A local sweep's GPUs, re-probed while it runs: which GPU each trial gets (gpu_pool.py).
    # None: Ray's GPU count alone decides (a joined cluster, no NVML, or no GPUs).
    gpu_pool: GpuPool | None = None
    # Per trial id, its GPU share when packed by memory (packing.py); else gpus_per_trial.
    gpu_shares: dict[str, float] = field(default_factory=dict)


@dataclass
class Failure:
    trial_id: str
    run_name: str
    error: str
    log_file: str | None


@dataclass
class SweepOutcome:
    finished: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    stopped: Tripped | None = None       # --fail_fast stopped the sweep
    not_started: int = 0                 # trials left pending by that stop
    last_results: dict[str, dict] = field(default_factory=dict)   # trial id -> last reported metrics
    makespan_s: float = 0.0


def log_file_for(trial: PlannedTrial, sweep: SweepDir, logdir: Path | None) -> str:
    return str((Path(logdir).expanduser().resolve() if logdir else sweep.logs) / f"{trial.run_name}.txt")


def payload(trial: PlannedTrial, sweep: SweepDir, opts: RunOptions) -> TrialPayload:
    return TrialPayload(
        trial_id=trial.trial_id, run_name=trial.run_name, config=trial.config.to_dict(),
        out_dir=str(sweep.trial_dir(trial.trial_id)), sweep_dir=str(sweep.root),
        log_file=log_file_for(trial, sweep, opts.logdir),
        cpus=opts.cpus_per_trial, gpus=opts.gpu_shares.get(trial.trial_id, opts.gpus_per_trial),
        coldsecs=opts.coldsecs,
        wandb=tracking.run_settings(opts.wandb_mode, opts.wandb_project, trial.config.dataset, sweep.name,
                                    trial.wandb_name or trial.run_name, trial.trial_id, sweep.wandb))


def run_sweep(trials: list[PlannedTrial], sweep: SweepDir, opts: RunOptions, already_done: int = 0,
              board_stream=None) -> SweepOutcome:
    """Run `trials` (the pending ones) to the end; Ctrl-C -> outcome.interrupted."""
    from orchestrator.trainable import TrialTrainable

    outcome = SweepOutcome()
    sweep.prune_tune_checkpoints()   # left by versions that handed checkpoints to Tune
    if not trials:
        return outcome
    payloads = [payload(t, sweep, opts) for t in trials]
    for t, p in zip(trials, payloads):  # the ledger's "planned" record (report: pending until done)
        sweep.record_planned(t.trial_id, t.run_name, p.config, p.log_file)
    board = ProgressBoard({t.trial_id: t.config.n_tasks for t in trials},
                          already_done=already_done, stream=board_stream, every_s=opts.progress_every_s)
    if opts.gpu_pool:   # GPU changes get a line each, and the status line says which are in use
        opts.gpu_pool.say, board.status = board.event, opts.gpu_pool.line
    stopper = FailFast(opts.fail_fast)
    callback = _SweepCallback(board, outcome, stopper, SweepGauges(sweep.name))
    slots = _slots(opts)
    per_tuner = opts.trials_per_tuner or max(1000, 50 * slots)
    stamp = time.strftime("run-%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    try:
        with _env({**TUNE_ENV, "TUNE_MAX_PENDING_TRIALS_PG": str(slots + 2)}), \
                _tune_logs_to(sweep.tune / "driver.log"):
            for k, start in enumerate(range(0, len(payloads), per_tuner)):
                if stopper.tripped:
                    break
                name = stamp if per_tuner >= len(payloads) else f"{stamp}-{k + 1:03d}"
                _tuner(TrialTrainable, payloads[start:start + per_tuner], name, sweep, opts, stopper, callback).fit()
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        callback.gauges.counts(board.counts(), force=True)
        board.close()
        outcome.makespan_s = time.monotonic() - t0
    outcome.stopped = stopper.tripped
    _reconcile(trials, sweep, outcome)
    sweep.prune_tune_checkpoints()
    return outcome


def _tuner(trainable, payloads: list[TrialPayload], name: str, sweep: SweepDir, opts: RunOptions,
           stopper: FailFast, callback: "_SweepCallback") -> tune.Tuner:
    return tune.Tuner(
        tune.with_resources(trainable, trial_resources(opts)),
        tune_config=tune.TuneConfig(search_alg=PendingTrials(payloads, opts.gpu_pool), num_samples=len(payloads),
                                    reuse_actors=opts.reuse_actors,
                                    trial_name_creator=lambda t: t.config["run_name"],
                                    trial_dirname_creator=lambda t: t.config["trial_id"]),
        run_config=tune.RunConfig(
            name=name, storage_path=str(sweep.tune), verbose=0, stop=stopper,
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            callbacks=[callback, JsonLoggerCallback()]),  # JSON: Tune's own per-trial history
    )


def trial_resources(opts: RunOptions):
    """What a trial asks Ray for: its CPUs and GPU share (per trial when packed by memory). With
    a GPU pool the share is also one of the custom resource of the GPU the pool chose for it
    (so its placement is the pool's)."""
    if opts.gpu_pool is None and not opts.gpu_shares:
        return {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}

    def of(config: dict[str, Any]) -> PlacementGroupFactory:
        trial = payload_of(config)
        ask = {"CPU": opts.cpus_per_trial, "GPU": trial.gpus}
        if trial.gpu_uuid:
            ask[resource_name(trial.gpu_uuid)] = trial.gpus
        return PlacementGroupFactory([ask])
    return of


class PendingTrials(Searcher):
    """Hands Tune the pending trials one at a time, in plan order.

    A `grid_search` over the payloads would do the same, but Tune saves its search state with
    every experiment checkpoint, and a grid's state is the whole grid: O(trials) per checkpoint,
    O(trials^2) per sweep. Resume is the ledger's job, so this searcher's saved state is only
    a count. Tune keeps at most `TUNE_MAX_PENDING_TRIALS_PG` trials waiting for resources
    (a searcher's default is 1; run_sweep allows one per free slot and two more).

    With a GPU pool the next trial waits (suggest returns None, Tune asks again) until a GPU
    that others leave idle has a free slot, and it names that GPU.
    """

    def __init__(self, payloads: list[TrialPayload], pool: GpuPool | None = None):
        super().__init__()
        self.payloads, self.handed_out, self.pool = payloads, 0, pool
        self.placed: dict[str, tuple[str, float]] = {}   # Tune's trial id -> (its GPU, share), until it ends

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.handed_out >= len(self.payloads):
            return Searcher.FINISHED
        payload = self.payloads[self.handed_out]
        if self.pool is not None:
            gpu = self.pool.place(payload.gpus)
            if gpu is None:
                return None
            self.placed[trial_id] = (gpu, payload.gpus)
            payload = dataclasses.replace(payload, gpu_uuid=gpu)
        self.handed_out += 1
        return tune_config(payload)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.placed:
            self.pool.release(*self.placed.pop(trial_id))

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(f'{{"handed_out": {self.handed_out}}}')

    def restore(self, checkpoint_path: str) -> None:
        pass  # never called: every launch is a fresh experiment over the ledger's pending trials


def _slots(opts: RunOptions) -> int:
    """Trials the cluster runs at once (as Ray counts it, at the time of the call)."""
    import ray

    have = ray.cluster_resources()
    slots = have.get("CPU", 1.0) / max(opts.cpus_per_trial, 1e-3)
    gpu = min(opts.gpu_shares.values(), default=opts.gpus_per_trial)   # packed: the smallest share
    if gpu > 0:
        slots = min(slots, have.get("GPU", 0.0) / gpu)
    return max(1, int(slots))


def _reconcile(trials: list[PlannedTrial], sweep: SweepDir, outcome: SweepOutcome) -> None:
    """The files decide: result.json = finished (stale error.json removed), else failed."""
    failed = {f.trial_id: f for f in outcome.failed}
    outcome.finished, outcome.failed = [], []
    for t in trials:
        if sweep.is_done(t.trial_id):
            clear_error(sweep.trial_dir(t.trial_id))
            outcome.finished.append(t.trial_id)
        elif t.trial_id in failed:
            outcome.failed.append(failed[t.trial_id])
        elif outcome.stopped:
            outcome.not_started += 1
        elif not outcome.interrupted:
            err = read_error(sweep.trial_dir(t.trial_id)) or {}
            outcome.failed.append(Failure(t.trial_id, t.run_name, err.get("error") or "did not finish",
                                          (sweep.planned(t.trial_id) or {}).get("log_file")))


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


class _SweepCallback(tune.Callback):
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
        self.outcome.last_results[tid] = {k: v for k, v in result.items() if not isinstance(v, dict)}
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


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _tune_logs_to(path: Path) -> Iterator[None]:
    """Tune's driver-side log (trial tracebacks, warnings) goes to a file, not the terminal:
    the progress line and our one-line failures are what the terminal shows."""
    logger = logging.getLogger("ray.tune")
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = saved
        handler.close()
