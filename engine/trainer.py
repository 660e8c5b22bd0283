"""One continual-learning trial: the task loop for both settings, evaluation, checkpoints.

`run_trial(cfg, out_dir, progress)` is the single entry point: the CLI and the orchestrator
both call it. It resumes from `out_dir/checkpoint.pt` (the last finished task) when present,
returns the finished result immediately when `out_dir/result.json` already holds this trial,
and writes result.json atomically only at the end.

A task (`train_task`) is one or more stages (EEIL adds a balanced finetuning) of epochs. Offline,
every stage starts a fresh SGD with its MultiStep schedule (FACIL), and with selection "val" a
10% per-class split of the task picks the best epoch. The exemplar methods' batches are
`[bs current | minibatch_size exemplars]` from two shuffled streams (`epoch_batches`); the online
methods draw their replay inside the step.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from engine import norms
from engine.backbones import build_backbone
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
from engine.results import (CHECKPOINT_FILE, RESULT_FILE, SCHEMA, load_checkpoint, probe_writable, read_result,
                            save_checkpoint, write_result)
from engine.sampling import class_balanced_pick
from engine.version import __version__

VAL_FRACTION = 0.1   # offline selection "val": per-class share of the task's training rows held out (FACIL)


@dataclass
class TrialState:
    """What survives a restart besides the model: progress and the accuracy rows so far."""
    next_task: int = 0
    steps: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    acc: dict[str, list[list[float]]] = field(default_factory=lambda: {"class_il": [], "task_il": []})
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
    return dataset, METHODS.get(cfg.model)(net, dataset, cfg, device)


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


def epoch_batches(method: Method, n_rows: int, memory: dict[str, torch.Tensor] | None,
                  cfg: TrialConfig, mixed: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Row indices of every step: (current rows, memory rows or None).

    - online methods: `bs` current rows per step (replay is drawn inside the step);
    - memory-stream methods, empty memory (t = 0): full batches of `bs + minibatch_size` current
      rows (FACIL's 64, drop_last);
    - memory-stream methods: two shuffled streams, `bs` current and `minibatch_size` memory rows
      per step, current first; an epoch is the longer stream, the shorter one is cycled (a fresh
      shuffle per pass; FACIL's itertools.cycle replays its first pass), and a step where either
      stream has only a partial batch is skipped, as the TBBN code skips batches != 64.
      A stream smaller than its batch size is one batch of all its rows.
    - `mixed` (EEIL's class-balanced stage): one shuffled stream of `bs + minibatch_size` rows over
      current and memory rows together, so every row is drawn equally often; each batch is split
      back into its current and memory rows (a batch without current rows is skipped).
    """
    device = method.device
    if not method.memory_stream:
        batches = torch.randperm(n_rows, device=device).split(cfg.bs)
        if len(batches) > 1 and batches[-1].numel() == 1:
            batches = batches[:-1]  # batch statistics of one row are undefined (BN raises)
        return [(b, None) for b in batches]
    if memory is None:
        size = min(cfg.bs + cfg.minibatch_size, n_rows)
        return [(b, None) for b in shuffled_stream(n_rows, size, -(-n_rows // size), device) if b is not None]
    n_mem = next(iter(memory.values())).shape[0]
    if mixed:
        n = n_rows + n_mem
        size = min(cfg.bs + cfg.minibatch_size, n)
        batches = [b for b in shuffled_stream(n, size, -(-n // size), device) if b is not None]
        if not batches:
            return []
        # current rows first in each batch (a stable sort keeps both groups' order), then one
        # host sync for every batch's split point, not a boolean-mask compaction per batch
        rows = torch.stack(batches)
        is_mem = rows >= n_rows
        rows = rows.gather(1, torch.sort(is_mem.to(torch.int8), dim=1, stable=True).indices)
        n_cur = (~is_mem).sum(1).tolist()
        return [(b[:k], b[k:] - n_rows) for b, k in zip(rows, n_cur) if k]
    n_c, n_m = min(cfg.bs, n_rows), min(cfg.minibatch_size, n_mem)
    length = max(-(-n_rows // n_c), -(-n_mem // n_m))
    pairs = zip(shuffled_stream(n_rows, n_c, length, device), shuffled_stream(n_mem, n_m, length, device))
    return [(c, m) for c, m in pairs if c is not None and m is not None]


def shuffled_stream(n_rows: int, size: int, length: int, device: torch.device) -> list[torch.Tensor | None]:
    """`length` batches of shuffled passes over `n_rows` rows (reshuffled every pass); a pass's
    partial last batch is None."""
    out: list[torch.Tensor | None] = []
    while len(out) < length:
        out += [b if b.numel() == size else None for b in torch.randperm(n_rows, device=device).split(size)]
    return out[:length]


def validation_split(y: torch.Tensor, seed: int, task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, validation rows): round(10%) of every class, at random (FACIL's get_data;
    np.round and torch.round both round half to even). A generator of its own, seeded by trial
    seed and task, keeps the split independent of the training RNG (and of resumes)."""
    counts = torch.bincount(y.cpu())
    n_val = torch.round(counts.double() * VAL_FRACTION).long()
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + task)
    val_rows = class_balanced_pick(y.cpu(), n_val, g).to(y.device)
    train_mask = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
    train_mask[val_rows] = False
    return train_mask.nonzero().squeeze(1), val_rows


@torch.no_grad()
def validation_loss(method: Method, dataset: ContinualDataset, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean validation loss, in eval mode, without augmentation (FACIL's eval on val_loader)."""
    method.net.eval()
    chunk = eval_chunk(dataset.device, dataset.input_shape)
    total = sum(method.validation_loss(dataset.normalize(xs), ys) for xs, ys in zip(x.split(chunk), y.split(chunk)))
    method.net.train()
    return total / y.shape[0]


class BestEpoch:
    """The lowest-validation-loss epoch of a stage and a copy of the network then (on its device)."""

    def __init__(self) -> None:
        self.loss = math.inf
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, loss: torch.Tensor, epoch: int, net: torch.nn.Module) -> float:
        value = float(loss)   # one host sync per epoch
        if value < self.loss:  # strict: the earliest best epoch wins; NaN never does
            self.loss, self.epoch = value, epoch
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return value

    def restore(self, net: torch.nn.Module) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


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
    correct = {"class_il": [], "task_il": []}
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
