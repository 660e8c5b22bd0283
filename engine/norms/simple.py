"""Batch-independent layers: LN, IN, GN (torch's own modules; no running stats, no hooks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.norms import REGISTRY, NormContext
from engine.errors import ConfigError
from engine.norms.common import largest_divisor_at_most, memory_format
from engine.options import Option


def _like(module: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """Put a new module on the replaced BN's device and dtype."""
    ref = next((t for t in (bn.weight, bn.running_mean) if t is not None), None)
    return module if ref is None else module.to(device=ref.device, dtype=ref.dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over [C, H, W] per sample that also takes channels-last input without a copy:
    a sample's elements are the same set in memory order [H, W, C], so it normalizes the NHWC view
    with the affine permuted alike (3x faster than letting layer_norm copy to NCHW)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if memory_format(x) != torch.channels_last:
            return super().forward(x)
        nhwc = [None if p is None else p.permute(1, 2, 0) for p in (self.weight, self.bias)]
        out = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[2:] + x.shape[1:2], *nhwc, self.eps)
        return out.permute(0, 3, 1, 2)


@REGISTRY.register("ln", needs_shapes=True)
def make_ln(bn: nn.BatchNorm2d, ctx: NormContext, **_) -> nn.Module:
    """Layer norm over [C,H,W] per sample; the per-element affine starts from BN's per-channel one."""
    shape = tuple(ctx.feature_shapes[ctx.name])
    ln = LayerNorm(shape, eps=bn.eps, elementwise_affine=bn.affine)
    if bn.affine:
        with torch.no_grad():
            ln.weight.copy_(bn.weight.view(-1, 1, 1).expand(shape))
            ln.bias.copy_(bn.bias.view(-1, 1, 1).expand(shape))
    return _like(ln, bn)


@REGISTRY.register("in", needs_shapes=True)
def make_in(bn: nn.BatchNorm2d, ctx: NormContext, **_) -> nn.Module:
    c, h, w = ctx.feature_shapes[ctx.name]
    if h * w == 1:  # one value per channel and sample: instance statistics are undefined
        raise ConfigError(f"norm in needs more than one spatial position per channel, but layer {ctx.name} "
                          f"sees {h}x{w} maps for this input size; use larger images (e.g. seq-synth "
                          "image_size=16) or another layer")
    return nn.InstanceNorm2d(bn.num_features, eps=bn.eps, affine=False, track_running_stats=False)


GN_OPTIONS = {"groups": Option(int, 32, low=1,
                             doc="groups G; the largest divisor of C not above G when G does not divide C")}


@REGISTRY.register("gn", options=GN_OPTIONS)
def make_gn(bn: nn.BatchNorm2d, ctx: NormContext, *, groups: int) -> nn.Module:
    """Group norm; a channel count `groups` does not divide gets the largest divisor below it."""
    gn = nn.GroupNorm(largest_divisor_at_most(bn.num_features, groups), bn.num_features,
                      eps=bn.eps, affine=bn.affine)
    gn = _like(gn, bn)
    if bn.affine:
        with torch.no_grad():
            gn.weight.copy_(bn.weight)
            gn.bias.copy_(bn.bias)
    return gn
