"""Continual Normalization (Pham et al. 2022): group norm without affine, then batch norm.

The BN part keeps the replaced BatchNorm2d's affine and running stats. In the online (AdaB2N)
protocol CN runs "no affine": its gamma/beta stay at their initial values (1, 0 on a fresh
backbone) because the layer asks the method to keep them out of the optimizer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.norms import REGISTRY, NormContext
from engine.norms.common import BatchStatNorm, largest_divisor_at_most
from engine.options import Option


class ContinualNorm(BatchStatNorm):
    eval_affine = None   # group-normalizes each sample first: not foldable

    def __init__(self, bn: nn.BatchNorm2d, groups: int, freeze_affine: bool):
        super().__init__(bn)
        self.groups = largest_divisor_at_most(self.num_features, groups)
        self.freeze_affine = freeze_affine and self.affine
        if self.freeze_affine:
            for p in (self.weight, self.bias):
                p.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}, freeze_affine={self.freeze_affine}"

    def frozen_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.weight, self.bias) if self.freeze_affine else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The official layer group-normalizes with the BN's eps, at training and at inference.
        z = F.group_norm(x, self.groups, None, None, self.eps)
        return self._bn_train(z) if self.training else self._bn_eval(z)


OPTIONS = {
    "groups": Option(int, 32, low=1, doc="group-norm groups G (online 32, offline 8); "
                                         "largest divisor of C not above G when G does not divide C"),
    "freeze_affine": Option(bool, True, doc="keep gamma/beta out of the optimizer "
                                            "(online: true, the AdaB2N protocol's 'no affine'; offline: false)"),
}
SETTING_DEFAULTS = {"online": {"groups": 32, "freeze_affine": True},
                    "offline": {"groups": 8, "freeze_affine": False}}


@REGISTRY.register("cn", options=OPTIONS, setting_defaults=SETTING_DEFAULTS)
def make_cn(bn: nn.BatchNorm2d, ctx: NormContext, *, groups: int, freeze_affine: bool) -> nn.Module:
    return ContinualNorm(bn, groups, freeze_affine)
