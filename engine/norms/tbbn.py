"""Task-Balanced BN (Cha et al. CVPR 2023), algorithms.md §2.

The definition folds the n_c current rows into r channel blocks and repeats every memory row
once per block: Z = cat(x_c.reshape(n_c/r, C*r, H, W), x_m.repeat(1, r, 1, 1)), then BN over Z.
Block b of Z holds current rows b, b+r, b+2r, ... and *all* memory rows, whose contribution is
the same for every block. So the statistics come from per-block sums of the current rows plus one
set of memory sums, and a memory row's output, the mean of its r block outputs, is one affine map
per channel: the r-fold copy is never built and time and memory stay close to BN's. The backward
is BN's backward on Z folded the same way (tests check it against the reshape-and-repeat form).
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from engine.norms import REGISTRY, NormContext
from engine.norms.common import LayoutNorm, channel_view, memory_format


@functools.lru_cache(maxsize=4096)
def tbbn_split(n_current: int, n_memory: int, task: int) -> int:
    """The split r: the largest common divisor of n_c and n_m not above r0 = (n_c / n_m) * t, at least 1.

    1 (plain BN) at t = 0 or without memory rows. With 48/16: r = 2,4,8,8,8,16,16,16,16 at t = 1..9.
    """
    if task <= 0 or n_memory <= 0 or n_current <= 0:
        return 1
    g = math.gcd(n_current, n_memory)  # common divisors of n_c and n_m = divisors of g
    # d <= n_c * t / n_m, kept in integers so a target like 1.5 is never rounded
    return max((d for d in range(1, g + 1) if g % d == 0 and d * n_memory <= n_current * task), default=1)


class _TBBNFunction(torch.autograd.Function):
    """out, block means (r, C), block biased vars (r, C) of the folded batch Z, without building Z.

    Saves only x and per-channel statistics (like BN); the centred input is recomputed in backward.
    Gradients are BN's backward on Z, summed back: a memory row's upstream gradient is split
    evenly over its r copies (the unfold takes their mean), and its r copies' gradients add up.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, n_current: int, r: int, eps: float):
        x = x.contiguous(memory_format=memory_format(x))               # NCHW or channels-last, kept
        n, c, h, w = x.shape
        hw, rows_c, n_m = h * w, n_current // r, n - n_current
        cnt_c, cnt_m = rows_c * hw, n_m * hw
        out = torch.empty_like(x)
        xc, xm = _split(channel_view(x), n_current, r)
        oc, om = _split(channel_view(out), n_current, r)

        sum_m = xm.sum((0, 2))
        mean_m = sum_m / cnt_m                                          # memory rows' mean (C,)
        mean = (xc.sum((0, 3)) + sum_m) / (cnt_c + cnt_m)               # block means (r, C)
        torch.sub(xc, mean[:, :, None], out=oc)                         # centred, in the output buffer
        torch.sub(xm, mean_m[:, None], out=om)
        sq_c = torch.linalg.vecdot(oc, oc).sum(0)                       # sum (x - mu_b)^2 over block b's current rows
        sq_m = torch.linalg.vecdot(om, om).sum(0)                       # sum (x - mean_m)^2 over memory rows
        var = (sq_c + sq_m + cnt_m * (mean_m - mean).square()) / (cnt_c + cnt_m)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = torch.zeros_like(mean_m) if bias is None else bias
        oc.mul_(scale[:, :, None]).add_(shift[:, None])
        # memory row: mean over blocks of (x - mu_b) * scale_b, with x - mu_b = (x - mean_m) + (mean_m - mu_b)
        om.mul_(scale.mean(0)[:, None]).add_((((mean_m - mean) * scale).mean(0) + shift)[:, None])

        ctx.save_for_backward(x, weight, mean, invstd, mean_m)
        ctx.n_current, ctx.r = n_current, r
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        x, weight, mean, invstd, mean_m = ctx.saved_tensors
        n_current, r = ctx.n_current, ctx.r
        g = grad_out.contiguous(memory_format=memory_format(x))
        n, c, h, w = x.shape
        hw, rows_c, n_m = h * w, n_current // r, n - n_current
        cnt = (rows_c + n_m) * hw                                       # elements per channel of Z
        dx = torch.empty_like(x)
        (xc, xm), (gc, gm), (dc, dm) = (_split(channel_view(t), n_current, r) for t in (x, g, dx))
        torch.sub(xc, mean[:, :, None], out=dc)
        torch.sub(xm, mean_m[:, None], out=dm)

        g_sum_m = gm.sum((0, 2))
        sum_dy = gc.sum((0, 3)) + g_sum_m / r                           # per Z channel: sum of dL/dy
        dot = invstd * (torch.linalg.vecdot(dc, gc).sum(0)              # per Z channel: sum of dL/dy * xhat
                        + (torch.linalg.vecdot(dm, gm).sum(0) + (mean_m - mean) * g_sum_m) / r)
        a = invstd if weight is None else invstd * weight               # BN backward: a*dy + b*(x - mu) + k
        b = -a * invstd * dot / cnt
        k = -a * sum_dy / cnt
        dc.mul_(b[:, :, None]).add_(k[:, :, None]).addcmul_(gc, a[:, :, None])
        dm.mul_(b.sum(0)[:, None]).add_((k + b * (mean_m - mean)).sum(0)[:, None]).addcmul_(gm, a.mean(0)[:, None])

        grad_w = dot.sum(0) if ctx.needs_input_grad[1] else None   # False for a None input
        grad_b = sum_dy.sum(0) if ctx.needs_input_grad[2] else None
        return dx, grad_w, grad_b, None, None, None


def _split(v: torch.Tensor, n_current: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An [N, C, HW] view as (current rows folded into r blocks [N_c/r, r, C, HW], memory rows [N_m, C, HW])."""
    n_c, c, hw = n_current, v.shape[1], v.shape[2]
    return v[:n_c].view(n_c // r, r, c, hw), v[n_c:]


def tbbn_train(x: torch.Tensor, n_current: int, r: int, weight: torch.Tensor | None,
               bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TBBN's training output, and Z's per-channel biased mean and variance shaped (r, C).

    Eagerly the autograd Function (BN's memory); under torch.compile the same sums as plain tensor
    ops, whose backward the compiler derives and fuses (dynamo cannot trace the Function's writes
    into views of its output, and would run every layer eagerly between graph breaks)."""
    if torch.compiler.is_compiling():
        return _tbbn_ops(x, n_current, r, weight, bias, eps)
    return _TBBNFunction.apply(x, weight, bias, n_current, r, eps)


def _tbbn_ops(x, n_current, r, weight, bias, eps):
    """`_TBBNFunction`'s forward in out-of-place ops, differentiated by autograd."""
    n, _, h, w = x.shape
    n_m = n - n_current
    xc, xm = x[:n_current].unflatten(0, (n_current // r, r)), x[n_current:]   # block b: current rows b, b+r, ...
    cnt_m = n_m * h * w
    cnt = n_current // r * h * w + cnt_m
    sum_m = xm.sum((0, 2, 3))
    mean_m = sum_m / cnt_m
    mean = (xc.sum((0, 3, 4)) + sum_m) / cnt                                 # block means (r, C)
    dc, dm = xc - mean[:, :, None, None], xm - mean_m[:, None, None]
    var = (dc.square().sum((0, 3, 4)) + dm.square().sum((0, 2, 3)) + cnt_m * (mean_m - mean).square()) / cnt
    scale = torch.rsqrt(var + eps)
    scale = scale if weight is None else scale * weight
    shift = torch.zeros_like(mean_m) if bias is None else bias
    oc = dc * scale[:, :, None, None] + shift[:, None, None]
    om = dm * scale.mean(0)[:, None, None] + (((mean_m - mean) * scale).mean(0) + shift)[:, None, None]
    return torch.cat((oc.flatten(0, 1), om)), mean.detach(), var.detach()


class TaskBalancedBN(LayoutNorm):
    """TBBN with BatchNorm2d's state; plain BN whenever the split is 1 or no layout was announced."""

    def plan(self, layout) -> tuple[int, int] | None:
        """(current rows, split r), or None (plain BN) when r is 1."""
        r = tbbn_split(layout.n_current, layout.n_memory, layout.task)
        return None if r == 1 else (layout.n_current, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._bn_eval(x)
        plan = self._take_plan(x.shape[0])
        return self._bn_train(x) if plan is None else self._train_split(x, *plan)

    def _train_split(self, x: torch.Tensor, n_current: int, r: int) -> torch.Tensor:
        """The training forward for a split r > 1 (the benchmark swaps in the literal form here)."""
        out, mean, var = tbbn_train(x, n_current, r, self.weight, self.bias, self.eps)
        factor = self._count_batch()
        with torch.no_grad():  # each block's running update, averaged over the r blocks
            n = (n_current // r + x.shape[0] - n_current) * x.shape[2] * x.shape[3]
            self.running_mean.lerp_(mean.mean(0), factor)
            self.running_var.lerp_(var.mean(0) * (n / max(n - 1, 1)), factor)
        return out


@REGISTRY.register("tbbn")
def make_tbbn(bn: nn.BatchNorm2d, ctx: NormContext, **_) -> nn.Module:
    return TaskBalancedBN(bn)
