"""The base of the offline exemplar methods (TBBN's protocol, FACIL's approaches: finetune, lucir,
icarl, eeil, ssil), and the helpers they share: see engine/methods/base.py for the step."""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine import norms
from engine.backbones.heads import TaskLinear
from engine.methods.base import Batch, Method


class ExemplarMethod(Method):
    """Base of the offline exemplar methods (TBBN's protocol, FACIL's approaches); see the module doc."""
    SETTING_DEFAULTS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}   # offline: best epoch on validation
    memory_stream = True
    keeps_old_model: ClassVar[bool] = False   # snapshot the model at task end into old_net (checkpointed)

    def __init__(self, *args, **kwargs):
        self.old_net: nn.Module | None = None
        super().__init__(*args, **kwargs)

    def prepare_net(self) -> None:
        self.net.head = self.make_head().to(self.device)

    def make_head(self) -> nn.Module:
        return TaskLinear(self.net.feature_dim, self.data.task_sizes)

    def head_tasks(self) -> list[int]:
        """Tasks whose head block the optimizer updates (FACIL with exemplars: every seen task)."""
        return list(range(self.task + 1))

    def trainable_parameters(self) -> list[nn.Parameter]:
        head = self.net.head
        skip = norms.frozen_parameters(self.net) | {id(p) for p in head.parameters()}
        backbone = [p for p in self.net.parameters() if id(p) not in skip]
        return backbone + head.shared_parameters() + head.task_parameters(self.head_tasks())

    # ---- class ranges of the current task (labels are remapped: task k owns [off[k], off[k+1])) ----
    @property
    def old_hi(self) -> int:
        return self.data.task_offsets[self.task]

    @property
    def seen_hi(self) -> int:
        return self.data.task_offsets[self.task + 1]

    # ---- old model -------------------------------------------------------------------------
    def finish_task(self, task: int) -> None:
        if self.keeps_old_model:
            self.old_net = freeze(copy.deepcopy(self.net))

    @torch.no_grad()
    def old_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.old_net(x)

    def extra_state(self) -> dict[str, Any]:
        return {"old_net": None if self.old_net is None else self.old_net.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("old_net") is not None:
            self.old_net = copy.deepcopy(self.net)
            self.old_net.load_state_dict(state["old_net"])
            freeze(self.old_net)

    # ---- loss helpers ------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the seen classes (FACIL: the heads that exist), on every row."""
        return F.cross_entropy(logits[:, : self.seen_hi], batch.y)

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(x)[:, : self.seen_hi], y, reduction="sum")


def freeze(net: nn.Module) -> nn.Module:
    """A frozen reference copy: eval mode (running statistics), no gradients."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def taskwise_log_softmax(logits: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """log_softmax within each task's block of columns (SSIL's and EEIL's task-wise softmax)."""
    return torch.cat([block.log_softmax(dim=1) for block in logits.split(sizes, dim=1)], dim=1)
