"""The method base: owns the training step, so a method file holds only what differs.

One step: compose `[current | replay draws...]` from un-augmented rows, augment them together,
tell the norm layers the layout, one forward, method loss + the norms' aux loss, backward,
optimizer step, buffer update. Methods override `loss` (and, if they store more than the
inputs, labels and task ids, `store`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine import buffers, norms
from engine.errors import ConfigError
from engine.norms import BatchLayout
from engine.options import Option, resolve_options


@dataclass
class Batch:
    """One composed training batch and where its parts sit."""
    x: torch.Tensor                 # augmented, normalized [N, C, H, W]
    y: torch.Tensor                 # labels of every row
    task_ids: torch.Tensor          # task of every row
    n_current: int
    replay: list[dict[str, torch.Tensor]]   # every replay draw's stored fields (un-augmented)
    slices: list[slice]             # rows of each replay draw in x

    def current(self, t: torch.Tensor) -> torch.Tensor:
        return t[: self.n_current]


class Method:
    OPTIONS: ClassVar[Mapping[str, Option]] = {}
    uses_buffer: ClassVar[bool] = True
    replay_draws: ClassVar[int] = 1       # independent replay minibatches per step (DER++: 2)
    trains_on_seen_tasks: ClassVar[bool] = False   # joint: every task's stream holds all seen data

    def __init__(self, net: nn.Module, dataset, cfg, device: torch.device):
        self.net, self.data, self.cfg, self.device = net, dataset, cfg, device
        self.args = dict(cfg.method_args)
        self.task = 0
        self.buffer = (buffers.REGISTRY.get(cfg.buffer_mode)(cfg.buffer_size, dataset.n_tasks, device)
                       if self.uses_buffer else None)
        self.opt = self.make_optimizer()

    # ---- configuration --------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_options(f"model {cls.__name__}", cls.OPTIONS, given)

    @classmethod
    def check_config(cls, cfg) -> None:
        """Cross-field checks on a resolved config, before anything runs."""
        if cls.uses_buffer:
            if cfg.buffer_size <= 0:
                raise ConfigError(f"buffer_size={cfg.buffer_size} must be positive for model {cfg.model}")
            if not cfg.minibatch_size:
                raise ConfigError(f"minibatch_size={cfg.minibatch_size} must be positive for model {cfg.model}")
            if cfg.buffer_mode == "ring" and cfg.n_tasks and cfg.buffer_size < cfg.n_tasks:
                raise ConfigError(f"ring buffer_size={cfg.buffer_size} is smaller than n_tasks={cfg.n_tasks}: "
                                  "every task needs at least one slot")

    def make_optimizer(self) -> torch.optim.Optimizer:
        frozen = norms.frozen_parameters(self.net)
        params = [p for p in self.net.parameters() if id(p) not in frozen]
        return torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                               weight_decay=self.cfg.weight_decay)

    # ---- task boundaries --------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        self.task = task
        norms.begin_task(self.net, task)

    def end_task(self, task: int) -> None:
        norms.end_task(self.net)

    # ---- the step ---------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step on current rows (uint8, un-augmented); returns the detached loss."""
        self.net.train()
        batch = self.compose(x, y)
        norms.set_layout(self.net, BatchLayout(batch.n_current, batch.task_ids, self.task))
        logits = self.net(batch.x)
        loss = self.loss(logits, batch)
        aux = norms.aux_loss(self.net)
        if aux is not None:
            loss = loss + aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.buffer is not None:
            self.store(x, y, logits[: batch.n_current].detach())
        return loss.detach()

    def compose(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        n_c = x.shape[0]
        draws = [] if self.buffer is None or self.buffer.is_empty() else \
            [self.buffer.sample(self.cfg.minibatch_size) for _ in range(self.replay_draws)]
        raw, ys = [x] + [d["x"] for d in draws], [y] + [d["y"] for d in draws]
        tasks = [torch.full_like(y, self.task)] + [d["task"] for d in draws]
        slices, start = [], n_c
        for d in draws:
            slices.append(slice(start, start + d["y"].shape[0]))
            start = slices[-1].stop
        return Batch(self.data.augment(torch.cat(raw)), torch.cat(ys), torch.cat(tasks), n_c, draws, slices)

    def store(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.buffer.add(self.task, x=x, y=y, task=torch.full_like(y, self.task))

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for normalized inputs, in eval mode (iCaRL overrides: nearest mean)."""
        return self.net(x)

    # ---- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "buffer": self.buffer.state_dict() if self.buffer is not None else None,
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)
