"""Pieces shared by the layer families: BN-shaped state, BN's own paths, the layout hook."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.norms.layout import BatchLayout


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The group count for `n` channels: `limit` if it divides `n`, else the largest divisor below it."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a dense channels-last [N, C, H, W] tensor, else contiguous_format."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def channel_view(x: torch.Tensor) -> torch.Tensor:
    """A dense [N, C, H, W] tensor, NCHW or channels-last (`x.contiguous(memory_format=
    memory_format(x))`), as an [N, C, H*W] view without copying, so the custom layers run in the
    format the convolutions around them produce (engine/device.py)."""
    n, c, h, w = x.shape
    if memory_format(x) == torch.channels_last:
        return x.permute(0, 2, 3, 1).view(n, h * w, c).transpose(1, 2)
    return x.view(n, c, h * w)


def copy_parameter(p: nn.Parameter | None) -> nn.Parameter | None:
    return None if p is None else nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)


def bn_affine(mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
              eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """F.batch_norm in eval mode as (scale, shift) per channel: y = x * scale + shift."""
    scale = torch.rsqrt(var + eps)
    shift = -mean * scale
    if weight is not None:
        scale, shift = scale * weight, shift * weight
    return scale, shift if bias is None else shift + bias


class BatchStatNorm(nn.Module):
    """A layer with BatchNorm2d's parameters and buffers, under BatchNorm2d's names.

    The state is copied from the replaced BatchNorm2d, so a BN checkpoint loads into it and its
    state_dict loads into a BN. Subclasses change the training forward only; `_bn_train` is
    BatchNorm2d's training path and `_bn_eval` is F.batch_norm on the running stats.
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        if not bn.track_running_stats:
            raise ValueError(f"{type(self).__name__} needs a BatchNorm2d that tracks running stats")
        self.num_features, self.eps, self.momentum, self.affine = bn.num_features, bn.eps, bn.momentum, bn.affine
        self.weight = copy_parameter(bn.weight)
        self.bias = copy_parameter(bn.bias)
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    def _count_batch(self) -> float | torch.Tensor:
        """Advance num_batches_tracked; return BN's running-average factor for this batch."""
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _bn_train(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly nn.BatchNorm2d's training forward (running var gets the unbiased batch var)."""
        factor = self._count_batch()
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps)

    def _bn_eval(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def eval_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`_bn_eval` as (scale, shift): what engine/folding.py folds into the convolution before.
        A subclass whose inference is not `_bn_eval` sets `eval_affine = None`."""
        return bn_affine(self.running_mean, self.running_var, self.weight, self.bias, self.eps)


class LayoutNorm(BatchStatNorm):
    """A BatchStatNorm told the batch composition before each training forward.

    `set_layout` runs eagerly, before the forward, and keeps only what the forward needs of the
    layout (`plan`): under --compile the graph then depends on the batch shape and that plan (TBBN's
    split, AdaB2N's phase), not on the task index, so there is one graph per layout, not per task.
    A layout serves exactly one training forward, so a forward the method did not announce
    (a stray train-mode forward, a second forward on other rows) falls back to plain BN instead of
    silently reusing a stale composition.
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__(bn)
        self._plan: tuple[int, Any] | None = None    # (rows the layout describes, plan(layout))

    def set_layout(self, layout: BatchLayout) -> None:
        self._plan = int(layout.task_ids.shape[0]), self.plan(layout)

    def plan(self, layout: BatchLayout) -> Any:
        """What the training forward needs of `layout`; None: plain BN."""
        return layout

    def _take_plan(self, n_rows: int) -> Any:
        """The plan of the announced layout (None without one), checked against the batch."""
        if self._plan is None:
            return None
        (rows, plan), self._plan = self._plan, None
        if rows != n_rows:
            raise ValueError(f"{type(self).__name__}: the layout describes {rows} rows, the batch has {n_rows}")
        return plan
