"""The function Ray Tune runs for one trial: engine trial -> `tune.report` after every task.

Tune's trial config is flat (orchestrator/tune_config.py); `payload_of` gives back the runner's
plain data (resolved engine config, paths, W&B settings). The engine resumes by itself from
`<out_dir>/checkpoint.pt`, written at every task boundary; the trial directory is on storage
every node sees (the launcher checks it), so a retry on any node continues from there. The
checkpoint is not handed to Tune as well: with `CheckpointConfig(num_to_keep)` every such
report forces a full rewrite of Tune's experiment state, O(trials) per task and O(trials^2)
per sweep (benchmarks/RESULTS.md, issue 20).

Failures: a non-finite loss (TrainingError) or a config the engine rejects is deterministic:
the trial records error.json and ends *without raising*, so Tune does not retry it. Anything
else (a killed process, CUDA OOM) raises, and Tune retries up to --max_failures.
"""
from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import logging
import os
import socket
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from ray.tune.trainable.function_trainable import wrap_function

from engine.config import option_of
from engine.events import EpochEnd, Event, TaskEnd
from engine.results import CHECKPOINT_FILE
from orchestrator.dashboard import announce
from orchestrator.ledger import clear_error, record_error
from orchestrator.ray_metrics import TrialGauges
from orchestrator.tune_config import TrialPayload, payload_of

EPOCH_REPORT_EVERY_S = 10.0


def train_one(config: dict[str, Any]) -> None:
    """Tune's function trainable."""
    trial = payload_of(config)
    out_dir = Path(trial.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if trial.gpus == 0:  # belt and braces with RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif trial.gpu_uuid:
        # The GPU pool chose this GPU (and Ray holds its share); Ray's own pick of a GPU index
        # is only its count. CUDA reads the variable when it starts in this process, and a
        # reused process only ever runs trials of the same GPU: Tune reuses an actor only for
        # the same resource request, and that names the GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = trial.gpu_uuid
    with _trial_log(trial.log_file) as log, _exclusive(out_dir, log):
        _cold_start_gate(trial, log)
        _run(trial, out_dir, log)


class TrialTrainable(wrap_function(train_one)):
    """`train_one` as Tune's trainable class, whose repr is the trial's run name: Ray shows it
    in the Actors page's Repr column and in the actor's task names (see orchestrator/dashboard.py)."""

    def __repr__(self) -> str:
        return str(getattr(self, "config", {}).get("run_name", "train_one"))


def _run(trial: TrialPayload, out_dir: Path, log: TextIO) -> None:
    import torch
    from ray import tune

    from engine.config import TrialConfig
    from engine.errors import ConfigError, TrainingError
    from engine.trainer import run_trial

    def say(line: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {line}", file=log, flush=True)

    threads = max(1, int(trial.cpus))
    torch.set_num_threads(threads)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" per task
    config = dict(trial.config)
    if config.get("device", "auto") == "auto":  # Ray's grant decides: a trial given a GPU uses it or fails
        config["device"] = "cuda" if trial.gpus > 0 else "cpu"
    cfg = TrialConfig.from_dict(config)
    resumed = "resuming from its checkpoint" if (out_dir / CHECKPOINT_FILE).exists() else "from the start"
    header = [f"start: pid {os.getpid()} on {socket.gethostname()}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}, {resumed}",
              "same trial by hand: " + engine_command(trial.config, out_dir, threads)]
    for line in header:
        say(line)
    announce(trial.run_name, [f"trial {trial.run_name} ({trial.trial_id}), log {trial.log_file}", *header])
    reporter = Reporter(trial, cfg.n_tasks, say)

    try:
        result = run_trial(cfg, out_dir, reporter)
    except (TrainingError, ConfigError) as exc:  # deterministic: fail now, no retry
        say(f"FAILED (not retried): {exc}")
        record_error(out_dir, trial.trial_id, str(exc), trial.log_file)
        reporter.wandb.finish(failed=True)
        tune.report({**reporter.where, "status": "failed", "error": str(exc), "n_tasks": cfg.n_tasks,
                     "config_error": isinstance(exc, ConfigError)})  # counts toward --fail_fast
        return
    except BaseException:
        say("crashed (Tune retries it up to --max_failures):\n" + traceback.format_exc())
        reporter.wandb.finish(failed=True)
        raise
    clear_error(out_dir)
    final = flat_metrics(result)
    reporter.wandb.summary(final)
    reporter.wandb.finish()
    say(f"finished: class-IL faa {final['class_il_faa']:.2f}  task-IL faa {final['task_il_faa']:.2f}  "
        f"({result['wall_time_s']:.1f} s)")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the actor may be reused for the next trial
    tune.report({**reporter.where, **final, "task": cfg.n_tasks, "tasks_done": cfg.n_tasks,
                 "n_tasks": cfg.n_tasks, "status": "finished", "pid": os.getpid(), "worker_rss_mib": _rss_mib()})


class Reporter:
    """The engine's progress events -> the trial's log line, Tune reports, W&B rows, Ray metrics.
    Epochs are reported at most every EPOCH_REPORT_EVERY_S (long offline tasks show progress)."""

    def __init__(self, trial: TrialPayload, n_tasks: int, say: Callable[[str], None]):
        import ray

        from orchestrator.tracking import TrialRun

        self.n_tasks, self.say, self.last_epoch_report = n_tasks, say, 0.0
        self.gauges = TrialGauges(trial)
        self.wandb = TrialRun(trial.wandb, {"trial_id": trial.trial_id, "run_name": trial.run_name,
                                            **trial.config}, say)
        # where the trial runs, in every report (tests and the dashboard: GPU packing, nodes)
        self.where = {"node_id": ray.get_runtime_context().get_node_id(),
                      "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")}

    def __call__(self, event: Event) -> None:
        from ray import tune

        if isinstance(event, TaskEnd):
            k = event.task + 1
            self.say(event.line())
            metrics = {**self.where, "task": k, "tasks_done": k, "n_tasks": event.n_tasks,
                       "class_il_acc": event.class_il_acc, "task_il_acc": event.task_il_acc,
                       "steps": event.steps, "trial_time_s": event.wall_time_s, "status": "running"}
            self.wandb.log({key: v for key, v in metrics.items() if isinstance(v, (int, float))}, step=k)
            self.gauges.task_end(event)
            tune.report(metrics)
        elif isinstance(event, EpochEnd) and time.monotonic() - self.last_epoch_report > EPOCH_REPORT_EVERY_S:
            self.last_epoch_report = time.monotonic()
            self.gauges.on_task(event.task + 1)
            tune.report({**self.where, "task": event.task + 1, "tasks_done": event.task,
                         "epoch": event.epoch + 1, "epochs": event.epochs, "n_tasks": self.n_tasks,
                         "status": "running"})


def _rss_mib() -> float:
    """This (reused) trial process's resident memory now: a leak shows as growth trial after trial."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return float("nan")


def flat_metrics(result: dict[str, Any]) -> dict[str, Any]:
    out = {f"{kind}_{name}": value for kind, metrics in result["metrics"].items()
           for name, value in metrics.items()}
    out.update(trial_time_s=result["wall_time_s"], steps=result["steps"], steps_per_s=result["steps_per_s"])
    return out


def engine_command(config: dict[str, Any], out_dir: Path, threads: int) -> str:
    """The `python -m engine` line that runs (or resumes) this very trial by hand: the thread
    count is in it because CPU kernels sum in another order with another count."""
    parts = ["python -m engine"]
    for key, value in config.items():
        if value is None or value == {} or value is False:
            continue
        if value is True:  # a store_true flag
            parts.append(option_of(key))
            continue
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
            if not value:
                continue
        parts.append(f"{option_of(key)} {value}")
    return " ".join(parts + [f"--threads {threads}", f"--out {out_dir}"])


# ---- process plumbing -----------------------------------------------------------------------

@contextlib.contextmanager
def _trial_log(path: str | None) -> Iterator[TextIO]:
    """Everything the trial prints (and a fatal-signal traceback) goes to its own log file."""
    if path is None:
        yield sys.stderr
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        faulthandler.enable(file=log)
        try:
            yield log
        finally:
            faulthandler.disable()


@contextlib.contextmanager
def _exclusive(out_dir: Path, log: TextIO) -> Iterator[None]:
    """One process per trial directory: an orphan of a killed launcher may still run it.
    The lock dies with its process (kill -9 included)."""
    with open(out_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another process runs this trial; waiting for it to end", file=log, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _cold_start_gate(trial: TrialPayload, log: TextIO) -> None:
    """--coldsecs: at least this many seconds between two trial starts in the sweep (run.py's
    cool-down, for workloads whose start-up spikes memory). 0 (default): no gate."""
    secs = float(trial.coldsecs or 0)
    if secs <= 0:
        return
    gate = Path(trial.sweep_dir) / ".coldstart"
    with open(gate, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # serializes starts; the sleep happens under the lock
        fh.seek(0)
        try:
            last = float(fh.read().strip() or 0)
        except ValueError:
            last = 0.0
        wait = last + secs - time.time()
        if wait > 0:
            print(f"cold start: waiting {wait:.1f} s (--coldsecs)", file=log, flush=True)
            time.sleep(wait)
        fh.seek(0)
        fh.truncate()
        fh.write(str(time.time()))
