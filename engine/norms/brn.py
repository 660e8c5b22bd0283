"""Batch Renormalization (Ioffe 2017), as the TBBN repository runs it (ludvb/batchrenorm).

Training: y = (x - mu_B) / sigma_B * r + d, with sigma_B = biased batch std + eps and the
correction factors r = clip(sigma_B / sigma, 1/r_max, r_max), d = clip((mu_B - mu) / sigma, ±d_max)
taken as constants. r_max, d_max ramp with the step count (a buffer, so it survives checkpoints):
r_max = clamp(2/35000 * step + 25/35, 1, 3), d_max = clamp(5/20000 * step - 1.25, 0, 5); both
are inactive (1, 0) for the first 5000 steps, where BRN is BN on biased stats.
Running stats keep the *std* (mean and std, momentum 0.01). Inference: (x - mu) / sigma, affine.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.norms import REGISTRY, NormContext
from engine.norms.common import copy_parameter

MOMENTUM = 0.01
EPS = 1e-3


class BatchRenorm2d(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.num_features, self.affine = bn.num_features, bn.affine
        self.momentum, self.eps = MOMENTUM, EPS
        self.weight = copy_parameter(bn.weight)
        self.bias = copy_parameter(bn.bias)
        if not bn.track_running_stats:
            raise ValueError("BatchRenorm2d needs a BatchNorm2d that tracks running stats")
        # BN keeps a variance, BRN a std: sqrt(1) = 1 is also BRN's own initial value.
        mean, std = bn.running_mean.detach().clone(), bn.running_var.detach().sqrt()
        steps = bn.num_batches_tracked.detach().clone()  # the ramps' step counter
        self.register_buffer("running_mean", mean)
        self.register_buffer("running_std", std)
        self.register_buffer("num_batches_tracked", steps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    def limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.num_batches_tracked.to(self.running_std.dtype)
        r_max = (2 / 35000 * step + 25 / 35).clamp(1.0, 3.0)
        d_max = (5 / 20000 * step - 25 / 20).clamp(0.0, 5.0)
        return r_max, d_max

    def _with_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (scale * self.weight, shift * self.weight + self.bias) if self.affine else (scale, shift)

    def eval_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode output as (scale, shift) per channel (also what engine/folding.py folds)."""
        scale = 1 / self.running_std
        return self._with_affine(scale, -self.running_mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            scale, shift = self.eval_affine()
            return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        std = var.sqrt() + self.eps
        with torch.no_grad():
            r_max, d_max = self.limits()
            r = (std / self.running_std).clamp(1 / r_max, r_max)
            d = ((mean - self.running_mean) / self.running_std).clamp(-d_max, d_max)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_std.lerp_(std, self.momentum)
            self.num_batches_tracked.add_(1)
        scale = r / std                      # y = x * scale + shift = (x - mean) / std * r + d
        scale, shift = self._with_affine(scale, d - mean * scale)
        return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))


@REGISTRY.register("brn")
def make_brn(bn: nn.BatchNorm2d, ctx: NormContext, **_) -> nn.Module:
    return BatchRenorm2d(bn)
