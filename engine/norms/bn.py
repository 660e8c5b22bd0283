"""Plain BatchNorm2d: the baseline every other layer is compared with."""
from torch import nn

from engine.norms import REGISTRY, NormFamily


def make_bn(bn: nn.BatchNorm2d, ctx, **_) -> nn.Module:
    return bn  # the backbone's own BatchNorm2d, momentum 0.1


REGISTRY.register("bn")(NormFamily(make=make_bn, options={}))
