"""AdaB2N (Lyu et al. NeurIPS 2023), algorithms.md §2, following the official layer.

Training with a layout: batch statistics are a task-balanced mixture. With n_k rows of task k
(k <= t) and a learnable theta, alpha_k = exp(theta_k) + n_k, pi = alpha / sum(alpha) and row i
weighs pi_k(i) / n_k(i); at t = 0 the stats are the plain biased batch ones. The running stats
move by eta (a schedule over forwards set by kappa, with no Bessel correction), and the layer's
regularizer mse(mu, running_mean) + mse(var, running_var) is returned, times lambd, by `aux_loss`
from task ada_t0 on. Inference is F.batch_norm on the running stats.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from engine.norms import REGISTRY, NormContext
from engine.norms.common import LayoutNorm, channel_view, memory_format
from engine.norms.layout import BatchLayout, TaskRows
from engine.options import Option


def adab2n_weights(task_ids: torch.Tensor, task: int, theta: torch.Tensor, renormalize: bool = False) -> torch.Tensor:
    """Per-row weights w_i = pi_k(i) / n_k(i) (float, same dtype as theta).

    A task k <= t absent from the batch keeps its mass exp(theta_k) in pi (the official quirk), so
    the weights sum below 1 unless `renormalize`. Rows of a task above t get weight 0.
    """
    layout = BatchLayout(n_current=0, task_ids=task_ids, task=task)
    return row_weights(layout.task_rows(theta.shape[0], theta.dtype), theta, renormalize)


def row_weights(rows: TaskRows, theta: torch.Tensor, renormalize: bool) -> torch.Tensor:
    # one-hot rows x tasks instead of scatter/index ops: deterministic on every device, gradients
    # by matmul; the one-hot and counts are the layout's, shared by the layers of one forward
    alpha = torch.where(rows.seen, theta.exp() + rows.counts, torch.zeros_like(theta))
    w = rows.one_hot @ (alpha / alpha.sum() / rows.counts.clamp_min(1))
    return w / w.sum() if renormalize else w


class _WeightedBNFunction(torch.autograd.Function):
    """BN with row-weighted statistics: mu = sum_i w_i mean_hw(x_i), var = sum_i w_i mean_hw((x_i - mu)^2).

    Returns (out, mu, var), all differentiable (the regularizer uses mu and var), with gradients
    for x, the row weights w (hence theta), gamma and beta. Saves x and small per-row statistics
    only; the centred input is recomputed in backward, so memory stays BN's.
    """

    @staticmethod
    def forward(ctx, x, w, weight, bias, eps: float):
        x = x.contiguous(memory_format=memory_format(x))               # NCHW or channels-last, kept
        hw = x.shape[2] * x.shape[3]
        out = torch.empty_like(x)
        xv, ov = channel_view(x), channel_view(out)
        row_mean = xv.sum(2) / hw                                    # (N, C)
        mean = w @ row_mean
        torch.sub(xv, mean[:, None], out=ov)                          # centred, in the output buffer
        row_sq = torch.linalg.vecdot(ov, ov) / hw                     # mean_hw((x_i - mu)^2), (N, C)
        var = w @ row_sq
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        ov.mul_(scale[:, None])
        if bias is not None:
            ov.add_(bias[:, None])
        ctx.save_for_backward(x, w, weight, mean, invstd, row_mean, row_sq)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_mean, grad_var):
        x, w, weight, mean, invstd, row_mean, row_sq = ctx.saved_tensors
        hw = x.shape[2] * x.shape[3]
        g = channel_view(grad_out.contiguous(memory_format=memory_format(x)))
        dx = torch.empty_like(x)
        dv = channel_view(dx)
        torch.sub(channel_view(x), mean[:, None], out=dv)           # x - mu
        g_sum = g.sum((0, 2))
        g_dot = torch.linalg.vecdot(dv, g).sum(0)                     # sum dL/dout * (x - mu)
        gamma = torch.ones_like(invstd) if weight is None else weight
        # totals through every path: out depends on mu and var, var on mu (its weights need not sum to 1)
        d_var = grad_var - 0.5 * gamma * invstd.pow(3) * g_dot
        d_mean = grad_mean - gamma * invstd * g_sum - 2 * d_var * (w @ (row_mean - mean))
        # dx_i = gamma*invstd*g + d_mean*w_i/hw + d_var*w_i*2(x - mu)/hw
        dv.mul_((2 / hw) * w[:, None, None] * d_var[:, None]).add_((w[:, None] * d_mean / hw)[:, :, None])
        dv.addcmul_(g, (gamma * invstd)[:, None])
        grad_w = row_mean @ d_mean + row_sq @ d_var if ctx.needs_input_grad[1] else None
        grad_weight = invstd * g_dot if ctx.needs_input_grad[2] else None   # False for a None input
        grad_bias = g_sum if ctx.needs_input_grad[3] else None
        return dx, grad_w, grad_weight, grad_bias, None


def weighted_batch_norm(x: torch.Tensor, w: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalize x by its row-weighted mean and (biased) variance; returns (out, mean, var).

    Eagerly the autograd Function (BN's memory); under torch.compile the same statistics as plain
    tensor ops, whose backward the compiler derives and fuses (dynamo cannot trace the Function's
    writes into views of its output)."""
    w = w.to(x.dtype)
    if torch.compiler.is_compiling():
        return _weighted_bn_ops(x, w, weight, bias, eps)
    return _WeightedBNFunction.apply(x, w, weight, bias, eps)


def _weighted_bn_ops(x, w, weight, bias, eps):
    """`_WeightedBNFunction`'s forward in out-of-place ops, differentiated by autograd."""
    mean = w @ x.mean((2, 3))
    centred = x - mean[:, None, None]
    var = w @ centred.square().mean((2, 3))
    scale = torch.rsqrt(var + eps)
    scale = scale if weight is None else scale * weight
    out = centred * scale[:, None, None]
    return (out if bias is None else out + bias[:, None, None]), mean, var


class AdaB2N(LayoutNorm):
    def __init__(self, bn: nn.BatchNorm2d, n_tasks: int, kappa: float, lambd: float, ada_t0: int,
                 renormalize: bool):
        super().__init__(bn)
        if self.momentum is None:
            raise ValueError("AdaB2N needs a BatchNorm2d with a momentum")
        self.kappa, self.lambd, self.ada_t0, self.renormalize = kappa, lambd, ada_t0, renormalize
        ref = self.running_mean
        self.theta = nn.Parameter(torch.zeros(n_tasks, device=ref.device, dtype=ref.dtype))
        # eta of the last forward (0: the schedule has not started); float64 like the official float.
        self.register_buffer("last_eta", torch.zeros((), device=ref.device, dtype=torch.float64))
        # the official layer's task counter (begin_task sets it, end_task advances it); the forward
        # reads t from the layout, which the method base fills from the same trainer state
        self.register_buffer("cur_task", torch.zeros((), device=ref.device, dtype=torch.long))
        self._reg: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, n_tasks={self.theta.shape[0]}, kappa={self.kappa}, "
                f"lambd={self.lambd}, ada_t0={self.ada_t0}, renormalize={self.renormalize}")

    # ---- hooks ------------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        self.cur_task.fill_(task)

    def end_task(self) -> None:
        self.cur_task.add_(1)

    def aux_loss(self) -> torch.Tensor | None:
        return self._reg

    # ---- forward ----------------------------------------------------------------------------
    def next_eta(self) -> float | torch.Tensor:
        """Counts the batch and returns this forward's eta (a tensor, so no host sync)."""
        self.num_batches_tracked.add_(1)
        m = self.momentum
        if self.kappa == 0.0:
            return 1.0 / self.num_batches_tracked.double()
        if self.kappa == 1.0:
            return m
        last = self.last_eta
        eta = torch.where(last == 0, torch.full_like(last, m ** self.kappa),
                          last / (last + (1 - m) ** self.kappa))
        last.copy_(eta)
        return eta

    def plan(self, layout: BatchLayout) -> tuple[TaskRows | None, bool]:
        """(the rows by task, None at task 0: plain batch statistics; whether the regularizer is on)."""
        rows = None if layout.task == 0 else layout.task_rows(self.theta.shape[0], self.theta.dtype)
        return rows, layout.task >= self.ada_t0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._reg = None
        if not self.training:
            return self._bn_eval(x)
        plan = self._take_plan(x.shape[0])
        if plan is None:
            return self._bn_train(x)
        rows, regularize = plan
        w = (torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device) if rows is None
             else row_weights(rows, self.theta, self.renormalize))
        out, mean, var = weighted_batch_norm(x, w, self.weight, self.bias, self.eps)
        eta = self.next_eta()
        with torch.no_grad():
            self.running_mean.add_((mean - self.running_mean) * eta)
            self.running_var.mul_(1 - eta).add_(var * eta)
        if regularize:
            # mse(mu, running_mean) + mse(var, running_var), against the updated running stats. The
            # stack copies them (a later in-place update cannot break backward), and one loss over
            # both is what torch.compile gets right: inductor's gradient of the sum of two losses
            # against two cloned, just-updated buffers is wrong (torch 2.14.1; tests/test_compile.py)
            reg = F.mse_loss(torch.stack((mean, var)), torch.stack((self.running_mean, self.running_var)),
                             reduction="sum") / self.num_features
            self._reg = self.lambd * reg
        return out


OPTIONS = {
    "kappa": Option(float, 1.0, low=0.0, high=1.0,
                    doc="running-stat momentum schedule: 1 = BN's momentum, 0 = cumulative mean 1/k; "
                        "paper grid 0.1, 0.4, 0.7, 1.0"),
    "lambd": Option(float, 0.1, low=0.0,
                    doc="weight of the regularizer mse(mu, running_mean) + mse(var, running_var); "
                        "paper grid 0.01, 0.1, 1, 10 (Mini-ImageNet 1e-5 .. 1e-2)"),
    "ada_t0": Option(int, 0, low=0, doc="first task (0-based) whose loss includes the regularizer; grid 0, 1 "
                                       "(er_ace, der, derpp: also only on steps with replay, as the fork)"),
    "renormalize": Option(bool, False, doc="rescale row weights to sum to 1 when a task is absent from the "
                                           "batch (false = official: the absent task keeps its mass)"),
}


@REGISTRY.register("adab2n", options=OPTIONS)
def make_adab2n(bn: nn.BatchNorm2d, ctx: NormContext, *, kappa: float, lambd: float, ada_t0: int,
                renormalize: bool) -> nn.Module:
    return AdaB2N(bn, ctx.n_tasks, kappa, lambd, ada_t0, renormalize)
