"""The method base: owns the training step, so a method file holds only what differs.

One step: compose `[current | replay...]` from un-augmented rows, augment them together, tell the
norm layers the layout, one forward, method loss + the norms' aux loss, backward, optimizer
step (on the CPU applied inside backward, parameter by parameter: engine/device.py), buffer update. Methods override `loss` (and, if they store more than the inputs, labels
and task ids, `store`).

Two families share it:
- `Method` (mammoth's online methods): replay rows are a fresh random draw from the buffer at
  every step, and the buffer takes every step's current rows (reservoir, ring).
- `ExemplarMethod` (engine/methods/exemplar.py; the offline TBBN/FACIL protocol: finetune, lucir, icarl, eeil, ssil): the
  memory is fixed while a task trains and rebuilt at its end (herding, or the buffer's policy over
  the task's rows); the trainer streams it beside the current rows, so every batch is
  `[n_c current | n_m exemplars]` (48 + 16 by default); one block of class weights per task,
  a fresh optimizer per task that holds only the seen tasks' weights; an optional frozen copy of
  the previous model (`old_net`, checkpointed) for distillation.
A herding buffer also works under the online methods (memory selected at task end, no per-step
store); methods that store per-step extras (der/derpp logits) cannot use it.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine import buffers, datasets, norms
from engine.device import autocast, compiled, eval_chunk, update_in_backward
from engine.errors import ConfigError
from engine.folding import folded
from engine.norms import BatchLayout
from engine.optim import SGD
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
    features: torch.Tensor | None = None    # backbone features of x, for methods with needs_features

    def current(self, t: torch.Tensor) -> torch.Tensor:
        return t[: self.n_current]


@dataclass(frozen=True)
class Stage:
    """One training stage of a task: epochs, learning rate, and which current rows (None: all).
    Every task has a main stage; EEIL adds its balanced finetuning."""
    name: str
    epochs: int
    lr: float
    rows: torch.Tensor | None = None
    memory_rows: torch.Tensor | None = None   # which rows of the streamed memory (None: all)
    mixed: bool = False   # one shuffled stream over current and memory rows, not bs + minibatch_size


class Method:
    OPTIONS: ClassVar[Mapping[str, Option]] = {}
    # Per-setting defaults below best_args (engine/config.py): mammoth trains offline without a
    # validation split, so these methods keep the last epoch.
    SETTING_DEFAULTS: ClassVar[Mapping[str, Mapping[str, Any]]] = {"offline": {"selection": "last"}}
    uses_buffer: ClassVar[bool] = True
    replay_draws: ClassVar[int] = 1       # independent replay minibatches per step (DER++: 2)
    trains_on_seen_tasks: ClassVar[bool] = False   # joint: every task's stream holds all seen data
    memory_stream: ClassVar[bool] = False  # replay rows come from the trainer's stream over a fixed memory
    needs_features: ClassVar[bool] = False  # loss reads batch.features (forward = head(features(x)))
    aux_loss_needs_replay: ClassVar[bool] = False  # the norms' regularizer only on steps with replay

    def __init__(self, net: nn.Module, dataset, cfg, device: torch.device):
        self.net, self.data, self.cfg, self.device = net, dataset, cfg, device
        self.args = dict(cfg.method_args)
        self.task = 0
        self.buffer = (buffers.REGISTRY.get(cfg.buffer_mode)(cfg.buffer_size, dataset.n_tasks, device)
                       if self.uses_buffer else None)
        herding = getattr(self.buffer, "selects_at_task_end", False)
        # the memory changes only at task end: herding always, and under the exemplar protocol
        self.memory_at_task_end = self.buffer is not None and (self.memory_stream or herding)
        self.prepare_net()
        self.opt = self.make_optimizer()
        # the training forward (the backbone alone where the loss reads features); evaluation and
        # copies of the network (old_net, the folded net) stay eager
        forward = self.net.features if self.needs_features else self.net
        self.train_forward = compiled(forward, device) if cfg.compile else forward

    # ---- configuration --------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_options(f"method {cls.__name__}", cls.OPTIONS, given)

    @classmethod
    def check_config(cls, cfg) -> None:
        """Cross-field checks on a resolved config, before anything runs."""
        if cls.uses_buffer:
            if cfg.buffer_size <= 0:
                raise ConfigError(f"buffer_size={cfg.buffer_size} must be positive for method {cfg.method}")
            if not cfg.minibatch_size:
                raise ConfigError(f"minibatch_size={cfg.minibatch_size} must be positive for method {cfg.method}")
            if cfg.buffer_mode == "ring" and cfg.n_tasks and cfg.buffer_size < cfg.n_tasks:
                raise ConfigError(f"ring buffer_size={cfg.buffer_size} is smaller than n_tasks={cfg.n_tasks}: "
                                  "every task needs at least one slot")
            if cfg.buffer_mode == "herding" and cls.store is not Method.store:
                raise ConfigError(f"method {cfg.method} stores per-step extras (e.g. logits), but buffer_mode "
                                  "herding selects exemplars at task end; use reservoir or ring")
            if getattr(buffers.REGISTRY.get(cfg.buffer_mode), "selects_at_task_end", False):
                n_classes = datasets.REGISTRY.get(cfg.dataset).geometry(cfg.data_args)[0]
                if cfg.buffer_size < n_classes:
                    raise ConfigError(f"buffer_mode herding keeps ceil(buffer_size / seen classes) exemplars per "
                                      f"class: buffer_size={cfg.buffer_size} must be at least the {n_classes} "
                                      f"classes of {cfg.dataset}")

    def prepare_net(self) -> None:
        """Adapt the network before the optimizer is built (heads, LUCIR's last ReLU)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        frozen = norms.frozen_parameters(self.net)
        return [p for p in self.net.parameters() if id(p) not in frozen]

    def make_optimizer(self, lr: float | None = None) -> SGD:
        return SGD(self.trainable_parameters(), lr=self.cfg.lr if lr is None else lr,
                   momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay,
                   in_backward=update_in_backward(self.device))

    def reset_optimizer(self, lr: float | None = None) -> None:
        """A fresh optimizer (FACIL: every task and stage); the old one stops updating first."""
        self.opt.close()
        self.opt = self.make_optimizer(lr)

    def fresh_optimizer_per_task(self) -> bool:
        """FACIL: a new optimizer and LR schedule every task (offline), and always when the trainable
        parameters change with the task (the exemplar methods' per-task heads)."""
        return self.cfg.setting == "offline" or self.memory_stream

    # ---- task boundaries --------------------------------------------------------------------
    def begin_task(self, task: int, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """`x, y`: the rows the task trains on (un-augmented; the validation split excluded)."""
        self.task = task
        norms.begin_task(self.net, task)

    def stages(self, task: int, y: torch.Tensor) -> list[Stage]:
        return [Stage("train", self.cfg.epochs, self.cfg.lr)]

    def end_task(self, task: int, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """After the last epoch (and the best-epoch restore): memory update, `finish_task`, norms."""
        if self.memory_at_task_end and x is not None:
            self.update_memory(task, x, y)
        self.finish_task(task)
        norms.end_task(self.net)

    def finish_task(self, task: int) -> None:
        """Hook after the memory update (iCaRL's class means, the old-model snapshot)."""

    # ---- the step ---------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor,
                memory: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One training step on current rows (uint8, un-augmented) and, for memory-stream methods,
        the exemplar rows the trainer streams; returns the detached loss."""
        self.net.train()
        batch = self.compose(x, y, memory)
        norms.set_layout(self.net, BatchLayout(batch.n_current, batch.task_ids, self.task))
        with autocast(self.device, self.cfg.precision):   # fp32: a no-op
            if self.needs_features:
                batch.features = self.train_forward(batch.x)
                logits = self.net.head(batch.features)
            else:
                logits = self.train_forward(batch.x)
            loss = self.loss(logits, batch)
            if batch.replay or not self.aux_loss_needs_replay:
                loss = norms.add_aux_loss(self.net, loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.buffer is not None and not self.memory_at_task_end:
            self.store(x, y, logits[: batch.n_current].detach())
        return loss.detach()

    def compose(self, x: torch.Tensor, y: torch.Tensor, memory: dict[str, torch.Tensor] | None = None) -> Batch:
        n_c = x.shape[0]
        if memory is not None:
            draws = [memory]
        elif self.buffer is None or self.buffer.is_empty() or self.memory_stream or not self.replays():
            draws = []
        else:
            draws = [self.buffer.sample(self.cfg.minibatch_size) for _ in range(self.replay_draws)]
        raw, ys = [x] + [d["x"] for d in draws], [y] + [d["y"] for d in draws]
        tasks = [torch.full_like(y, self.task)] + [d["task"] for d in draws]
        slices, start = [], n_c
        for d in draws:
            slices.append(slice(start, start + d["y"].shape[0]))
            start = slices[-1].stop
        return Batch(self.data.augment(torch.cat(raw)), torch.cat(ys), torch.cat(tasks), n_c, draws, slices)

    def replays(self) -> bool:
        """Whether this step draws replay from a non-empty buffer (ER-ACE: only from task 1)."""
        return True

    def store(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.buffer.add(self.task, x=x, y=y, task=torch.full_like(y, self.task))

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    # ---- memory -----------------------------------------------------------------------------
    def replay_memory(self) -> dict[str, torch.Tensor] | None:
        """The fixed memory the trainer streams (memory-stream methods), or None."""
        if not self.memory_stream or self.buffer is None or self.buffer.is_empty():
            return None
        return self.buffer.all()

    @torch.no_grad()
    def update_memory(self, task: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """End of task: herding re-selects among the task's rows and the stored exemplars (FACIL's
        candidates, current first); other buffers take the task's rows in random order."""
        rows = {"x": x, "y": y, "task": self.data.task_of(y)}
        if getattr(self.buffer, "selects_at_task_end", False):
            if not self.buffer.is_empty():
                stored = self.buffer.all()
                rows = {k: torch.cat([v, stored[k]]) for k, v in rows.items()}
            self.buffer.select(rows, self.embed(rows["x"]), n_classes=self.data.task_offsets[task + 1])
        else:
            order = torch.randperm(y.shape[0], device=y.device)
            self.buffer.add(task, **{k: v[order] for k, v in rows.items()})

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of un-augmented uint8 rows, in eval mode (herding, class means)."""
        was_training = self.net.training
        self.net.eval()
        out = [self.net.features(self.data.normalize(chunk)) for chunk in x.split(eval_chunk(self.device, self.data.input_shape))]
        self.net.train(was_training)
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    @contextlib.contextmanager
    def evaluating(self, probe: torch.Tensor):
        """Eval mode for the duration, `self.net` the network with its normalization folded into
        the convolutions (engine/folding.py: the same scores, cheaper); train mode after.
        `probe`: a few normalized input rows (none: nothing is folded)."""
        net = self.net
        net.eval()
        self.net = folded(net, probe) if len(probe) else net
        try:
            yield
        finally:
            self.net = net
            net.train()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for normalized inputs, in eval mode (iCaRL overrides: nearest mean)."""
        return self.net(x)

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed loss on normalized validation rows, in eval mode (best-epoch selection)."""
        return F.cross_entropy(self.net(x), y, reduction="sum")

    # ---- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "buffer": self.buffer.state_dict() if self.buffer is not None else None,
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        if not self.fresh_optimizer_per_task():  # otherwise rebuilt before the next step anyway
            self.opt.load_state_dict(state["opt"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
