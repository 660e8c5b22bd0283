"""One continual-learning trial: the task loop for both settings, evaluation, checkpoints.

`run_trial(cfg, out_dir, progress)` is the single entry point: the CLI and the orchestrator
both call it. It resumes from `out_dir/checkpoint.pt` (the last finished task) when present,
returns the finished result immediately when `out_dir/result.json` already holds this trial,
and writes result.json atomically only at the end.

A task (`train_task`) is one or more stages (EEIL adds a balanced finetuning) of epochs. Offline,
every stage starts a fresh SGD with its MultiStep schedule (FACIL), and with selection "val" a
10% per-class split of the task picks the best epoch (selection.py). The exemplar methods'
batches are `[bs current | minibatch_size exemplars]` from two shuffled streams (batches.py); the
online methods draw their replay inside the step.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from engine import norms
from engine.backbones import build_backbone
from engine.batches import epoch_batches
from engine.config import TrialConfig
from engine.datasets import ContinualDataset, build_dataset
from engine.device import (describe_device, device_uuid, eval_chunk, place, resolve_device, restore_rng, rng_state,
                           set_numerics)
from engine.errors import ConfigError, TrainingError
from engine.events import EpochEnd, Progress, TaskEnd
from engine.methods import REGISTRY as METHODS
from engine.methods.base import Method
from engine.metrics import summarize
from engine.optim import multistep_lr
from engine.results import (CHECKPOINT_FILE, RESULT_FILE, SCENARIOS, SCHEMA, load_checkpoint, probe_writable,
                            read_result, save_checkpoint, write_result)
from engine.selection import BestEpoch, validation_loss, validation_split
from engine.version import __version__


@dataclass
class TrialState:
    """What survives a restart besides the model: progress and the accuracy rows so far."""
    next_task: int = 0
    steps: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    acc: dict[str, list[list[float]]] = field(default_factory=lambda: {k: [] for k in SCENARIOS})
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def prepare_out_dir(out_dir: Path) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_writable(out)
    except OSError as exc:
        raise ConfigError(f"--out {str(out)!r} is not writable: {exc.strerror or exc}") from None
    return out


def build_trial(cfg: TrialConfig, device: torch.device,
                dataset: ContinualDataset | None = None) -> tuple[ContinualDataset, Method]:
    """`dataset`: already built (the launcher's pre-flight passes placeholder images)."""
    dataset = dataset or build_dataset(cfg, device)
    net = build_backbone(cfg.backbone, dataset.input_shape[0], dataset.n_classes)
    norms.install(net, cfg.norm, n_tasks=dataset.n_tasks, setting=cfg.setting,
                  input_shape=dataset.input_shape, precision=cfg.precision, **cfg.norm_args)
    place(net, device)
    return dataset, METHODS.get(cfg.method)(net, dataset, cfg, device)


def run_trial(cfg: TrialConfig, out_dir: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    cfg = cfg.resolved()
    trial_id = cfg.trial_id()
    out = prepare_out_dir(Path(out_dir))
    done = read_result(out)
    if done is not None:
        if done.get("trial_id") != trial_id:
            raise ConfigError(f"{out / RESULT_FILE} holds another trial ({done.get('trial_id')}); "
                              "choose another --out")
        return done
    device = resolve_device(cfg.device)
    numerics = set_numerics(cfg.deterministic)
    torch.manual_seed(cfg.seed)
    dataset, method = build_trial(cfg, device)
    state = _resume(out, cfg, trial_id, method)
    notify = progress or (lambda event: None)

    for task in range(state.next_task, dataset.n_tasks):
        t0 = time.perf_counter()
        state.steps += train_task(method, dataset, cfg, task, notify)
        state.train_time_s += time.perf_counter() - t0
        for kind, row in evaluate(method, dataset, task).items():
            state.acc[kind].append(row)
        state.next_task = task + 1
        state.wall_time_s += time.perf_counter() - t0
        ckpt = save_checkpoint(out, _checkpoint(cfg, trial_id, method, state))
        notify(TaskEnd(task=task, n_tasks=dataset.n_tasks, steps=state.steps,
                       class_il_acc=sum(state.acc["class_il"][-1]) / (task + 1),
                       task_il_acc=sum(state.acc["task_il"][-1]) / (task + 1),
                       acc_matrix=state.acc, checkpoint=str(ckpt), wall_time_s=state.wall_time_s))

    result = {
        "schema": SCHEMA, "trial_id": trial_id, "status": "finished", "config": cfg.to_dict(),
        "metrics": {kind: summarize(rows) for kind, rows in state.acc.items()},
        "acc_matrix": state.acc,
        "wall_time_s": round(state.wall_time_s, 3), "train_time_s": round(state.train_time_s, 3),
        "steps": state.steps, "steps_per_s": round(state.steps / max(state.train_time_s, 1e-9), 3),
        "device": describe_device(device), "device_uuid": device_uuid(device), "numerics": numerics,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "engine": __version__},
        "started_at": state.started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_result(out, result)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return result


def train_task(method: Method, dataset: ContinualDataset, cfg: TrialConfig, task: int,
               notify: Progress) -> int:
    """All stages and epochs of one task; returns the number of optimizer steps.

    Offline with selection "val": 10% of every class of the task is held out (FACIL's split) and
    each stage keeps the epoch with the lowest validation loss (FACIL's `best_model`, restored at
    the stage's end). The memory update and the method's end-of-task work follow the restore.
    """
    seen = range(task + 1) if method.trains_on_seen_tasks else [task]
    # the task's images on the device while it trains (they may live on the host: datasets.base)
    x = torch.cat([dataset.tasks[k].x_train for k in seen]).to(dataset.device)
    y = torch.cat([dataset.tasks[k].y_train for k in seen])
    val = None
    if cfg.setting == "offline" and cfg.selection == "val":
        train_rows, val_rows = validation_split(y, cfg.seed, task)
        if val_rows.numel():
            val = (x[val_rows], y[val_rows])
            x, y = x[train_rows], y[train_rows]
    method.begin_task(task, x, y)
    stages = method.stages(task, y)
    total_epochs = sum(stage.epochs for stage in stages)
    steps = epoch_no = 0
    for stage in stages:
        sx, sy = (x, y) if stage.rows is None else (x[stage.rows], y[stage.rows])
        fresh = method.fresh_optimizer_per_task()
        if fresh:  # FACIL: a fresh optimizer and MultiStep LR schedule every task (stage)
            method.reset_optimizer(stage.lr)
        memory = method.replay_memory()        # fixed while the task trains (memory-stream methods)
        if memory is not None and stage.memory_rows is not None:
            memory = {k: v[stage.memory_rows] for k, v in memory.items()}
        best = BestEpoch() if val is not None else None
        for stage_epoch in range(stage.epochs):
            if fresh:
                method.opt.lr = multistep_lr(stage.lr, cfg.lr_milestones or (), cfg.lr_gamma, stage_epoch)
            losses = train_epoch(method, sx, sy, memory, cfg, stage.mixed)
            steps += len(losses)
            if losses:
                _check_finite(torch.stack(losses), task, epoch_no, dataset.n_tasks)  # one host sync per epoch
            val_loss = None if best is None else best.update(validation_loss(method, dataset, *val), epoch_no,
                                                             method.net)
            if total_epochs > 1:
                notify(EpochEnd(task=task, epoch=epoch_no, epochs=total_epochs, lr=method.opt.lr, val_loss=val_loss))
            epoch_no += 1
        if best is not None:
            best.restore(method.net)
    method.end_task(task, x, y)
    return steps


def train_epoch(method: Method, x: torch.Tensor, y: torch.Tensor, memory: dict[str, torch.Tensor] | None,
                cfg: TrialConfig, mixed: bool = False) -> list[torch.Tensor]:
    """One epoch over the current rows `x, y` (and the streamed memory); returns the step losses."""
    losses = []
    for cur, mem in epoch_batches(method, y.shape[0], memory, cfg, mixed):
        replay = None if mem is None else {k: v[mem] for k, v in memory.items()}
        losses.append(method.observe(x[cur], y[cur], replay))
    return losses


def _check_finite(losses: torch.Tensor, task: int, epoch: int, n_tasks: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        step = int(bad.nonzero()[0]) + 1
        raise TrainingError(f"non-finite loss ({losses[step - 1].item()}) at task {task + 1}/{n_tasks}, "
                            f"epoch {epoch + 1}, step {step}; lower --lr or check the data")


@torch.no_grad()
def evaluate(method: Method, dataset: ContinualDataset, task: int) -> dict[str, list[float]]:
    """Accuracy (%) on every seen task's test set: class-IL over all seen classes, task-IL
    within the task's own classes."""
    seen_hi = dataset.task_offsets[task + 1]
    correct = {k: [] for k in SCENARIOS}   # class_il, task_il
    sizes, chunk = [], eval_chunk(dataset.device, dataset.input_shape)
    with method.evaluating(dataset.normalize(dataset.tasks[0].x_test[:2])):
        for j in range(task + 1):
            t, lo, hi = dataset.tasks[j], dataset.task_offsets[j], dataset.task_offsets[j + 1]
            c_cil = torch.zeros((), device=dataset.device)
            c_til = torch.zeros((), device=dataset.device)
            for xs, ys in zip(t.x_test.split(chunk), t.y_test.split(chunk)):
                scores = method.predict(dataset.normalize(xs))
                c_cil += (scores[:, :seen_hi].argmax(1) == ys).sum()
                c_til += (scores[:, lo:hi].argmax(1) + lo == ys).sum()
            correct["class_il"].append(c_cil)
            correct["task_il"].append(c_til)
            sizes.append(max(len(t.y_test), 1))
    return {kind: [100.0 * c / n for c, n in zip(torch.stack(vals).tolist(), sizes)]
            for kind, vals in correct.items()}


def _checkpoint(cfg: TrialConfig, trial_id: str, method: Method, state: TrialState) -> dict[str, Any]:
    return {"trial_id": trial_id, "config": cfg.to_dict(), "method": method.state_dict(),
            "rng": rng_state(method.device), "state": state.__dict__}


def _resume(out: Path, cfg: TrialConfig, trial_id: str, method: Method) -> TrialState:
    ckpt = load_checkpoint(out)
    if ckpt is None:
        return TrialState()
    if ckpt.get("trial_id") != trial_id:
        raise ConfigError(f"{out / CHECKPOINT_FILE} belongs to another trial ({ckpt.get('trial_id')}); "
                          "delete it or choose another --out")
    method.load_state_dict(ckpt["method"])
    restore_rng(ckpt["rng"], method.device)
    return TrialState(**ckpt["state"])
