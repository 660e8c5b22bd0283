"""Plain BatchNorm2d: the baseline every other layer is compared with."""
from torch import nn

from engine.norms import REGISTRY


@REGISTRY.register("bn")
def make_bn(bn: nn.BatchNorm2d, ctx, **_) -> nn.Module:
    return bn  # the backbone's own BatchNorm2d, momentum 0.1
