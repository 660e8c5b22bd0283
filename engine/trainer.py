"""One continual-learning trial: the task loop for both settings, evaluation, checkpoints.

`run_trial(cfg, out_dir, progress)` is the single entry point: the CLI and the orchestrator
both call it. It resumes from `out_dir/checkpoint.pt` (the last finished task) when present,
returns the finished result immediately when `out_dir/result.json` already holds this trial,
and writes result.json atomically only at the end.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from engine import __version__, norms
from engine.backbones import build_backbone
from engine.config import TrialConfig
from engine.datasets import ContinualDataset, build_dataset
from engine.errors import ConfigError, TrainingError
from engine.methods import REGISTRY as METHODS
from engine.methods.base import Method
from engine.metrics import summarize
from engine.results import (CHECKPOINT_FILE, SCHEMA, load_checkpoint, read_result, save_checkpoint,
                            write_json, RESULT_FILE)

Progress = Callable[[dict[str, Any]], None]
EVAL_CHUNK = 1024


@dataclass
class TrialState:
    """What survives a restart besides the model: progress and the accuracy rows so far."""
    next_task: int = 0
    steps: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    acc: dict[str, list[list[float]]] = field(default_factory=lambda: {"class_il": [], "task_il": []})
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def prepare_out_dir(out_dir: Path) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {str(out)!r} is not writable: {exc.strerror or exc}") from None
    return out


def build_trial(cfg: TrialConfig, device: torch.device) -> tuple[ContinualDataset, Method]:
    dataset = build_dataset(cfg, device)
    net = build_backbone(cfg.backbone, dataset.input_shape[0], dataset.n_classes)
    norms.install(net, cfg.norm, n_tasks=dataset.n_tasks, setting=cfg.setting,
                  input_shape=dataset.input_shape, **cfg.norm_args)
    net.to(device)
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
        notify({"event": "task_end", "task": task, "n_tasks": dataset.n_tasks, "steps": state.steps,
                "class_il_acc": sum(state.acc["class_il"][-1]) / (task + 1),
                "task_il_acc": sum(state.acc["task_il"][-1]) / (task + 1),
                "acc_matrix": state.acc, "checkpoint": str(ckpt), "wall_time_s": state.wall_time_s})

    result = {
        "schema": SCHEMA, "trial_id": trial_id, "status": "finished", "config": cfg.to_dict(),
        "metrics": {kind: summarize(rows) for kind, rows in state.acc.items()},
        "acc_matrix": state.acc,
        "wall_time_s": round(state.wall_time_s, 3), "train_time_s": round(state.train_time_s, 3),
        "steps": state.steps, "steps_per_s": round(state.steps / max(state.train_time_s, 1e-9), 3),
        "device": describe_device(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "engine": __version__},
        "started_at": state.started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / RESULT_FILE, result)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return result


def train_task(method: Method, dataset: ContinualDataset, cfg: TrialConfig, task: int,
               notify: Progress) -> int:
    """All epochs of one task; returns the number of optimizer steps."""
    method.begin_task(task)
    seen = range(task + 1) if method.trains_on_seen_tasks else [task]
    x = torch.cat([dataset.tasks[k].x_train for k in seen])
    y = torch.cat([dataset.tasks[k].y_train for k in seen])
    scheduler = None
    if cfg.setting == "offline":  # FACIL: a fresh optimizer and LR schedule for every task
        method.opt = method.make_optimizer()
        scheduler = torch.optim.lr_scheduler.MultiStepLR(method.opt, list(cfg.lr_milestones), cfg.lr_gamma)
    steps = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(x.shape[0], device=x.device)
        batches = order.split(cfg.bs)
        if len(batches) > 1 and batches[-1].numel() == 1:
            batches = batches[:-1]  # batch statistics of one row are undefined (BN raises)
        losses = [method.observe(x[idx], y[idx]) for idx in batches]
        steps += len(losses)
        _check_finite(torch.stack(losses), task, epoch, dataset.n_tasks)  # one host sync per epoch
        if scheduler is not None:
            scheduler.step()
        if cfg.epochs > 1:
            notify({"event": "epoch_end", "task": task, "epoch": epoch, "epochs": cfg.epochs})
    method.end_task(task)
    return steps


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
    method.net.eval()
    seen_hi = dataset.task_offsets[task + 1]
    correct = {"class_il": [], "task_il": []}
    sizes = []
    for j in range(task + 1):
        t, lo, hi = dataset.tasks[j], dataset.task_offsets[j], dataset.task_offsets[j + 1]
        c_cil = torch.zeros((), device=dataset.device)
        c_til = torch.zeros((), device=dataset.device)
        for xs, ys in zip(t.x_test.split(EVAL_CHUNK), t.y_test.split(EVAL_CHUNK)):
            scores = method.predict(dataset.normalize(xs))
            c_cil += (scores[:, :seen_hi].argmax(1) == ys).sum()
            c_til += (scores[:, lo:hi].argmax(1) + lo == ys).sum()
        correct["class_il"].append(c_cil)
        correct["task_il"].append(c_til)
        sizes.append(max(len(t.y_test), 1))
    method.net.train()
    return {kind: [100.0 * c / n for c, n in zip(torch.stack(vals).tolist(), sizes)]
            for kind, vals in correct.items()}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"


def _checkpoint(cfg: TrialConfig, trial_id: str, method: Method, state: TrialState) -> dict[str, Any]:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"trial_id": trial_id, "config": cfg.to_dict(), "method": method.state_dict(),
            "rng": rng, "state": state.__dict__}


def _resume(out: Path, cfg: TrialConfig, trial_id: str, method: Method) -> TrialState:
    ckpt = load_checkpoint(out)
    if ckpt is None:
        return TrialState()
    if ckpt.get("trial_id") != trial_id:
        raise ConfigError(f"{out / CHECKPOINT_FILE} belongs to another trial ({ckpt.get('trial_id')}); "
                          "delete it or choose another --out")
    method.load_state_dict(ckpt["method"])
    torch.set_rng_state(ckpt["rng"]["cpu"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    return TrialState(**ckpt["state"])
