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
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ray import tune
from ray.tune.logger import JsonLoggerCallback

from orchestrator.failfast import FailFast
from orchestrator.flags import DEFAULT
from orchestrator.gpu_pool import GpuPool
from orchestrator.ledger import SweepDir, clear_error, read_error
from orchestrator.progress import ProgressBoard
from orchestrator.ray_metrics import SweepGauges
from orchestrator.sweep import PlannedTrial
from orchestrator.tune_callback import Failure, SweepCallback, SweepOutcome
from orchestrator.tune_config import TrialPayload
from orchestrator.tune_search import PendingTrials, trial_resources
from orchestrator import tracking

# Tune's console output, its automatic CSV/TensorBoard loggers and its Ctrl-C handler give way
# to ours (progress line, the sweep directory, exit status 130); its JSON logger is kept.
TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
            "TUNE_DISABLE_SIGINT_HANDLER": "1", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@dataclass
class RunOptions:
    cpus_per_trial: float = DEFAULT["cpus_per_trial"]
    gpus_per_trial: float = 0.0          # already fitted to the cluster (cluster.fit_trial_resources)
    max_failures: int = DEFAULT["max_failures"]
    coldsecs: float = DEFAULT["coldsecs"]
    logdir: Path | None = None           # None: <sweep>/_logs
    wandb_mode: str = "disabled"         # online | offline | disabled (tracking.choose_mode)
    wandb_project: str = DEFAULT["wandb_project"]
    process_per_trial: bool = DEFAULT["process_per_trial"]   # False: one process runs many trials (Tune's reuse)
    fail_fast: int = DEFAULT["fail_fast"]       # stop after this many trials fail the same way (0: never)
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
    callback = SweepCallback(board, outcome, stopper, SweepGauges(sweep.name))
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
           stopper: FailFast, callback: SweepCallback) -> tune.Tuner:
    return tune.Tuner(
        tune.with_resources(trainable, trial_resources(opts)),
        tune_config=tune.TuneConfig(search_alg=PendingTrials(payloads, opts.gpu_pool), num_samples=len(payloads),
                                    reuse_actors=not opts.process_per_trial,
                                    trial_name_creator=lambda t: t.config["run_name"],
                                    trial_dirname_creator=lambda t: t.config["trial_id"]),
        run_config=tune.RunConfig(
            name=name, storage_path=str(sweep.tune), verbose=0, stop=stopper,
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            callbacks=[callback, JsonLoggerCallback()]),  # JSON: Tune's own per-trial history
    )


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
