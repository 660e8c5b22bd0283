"""Backbones: name -> `factory(in_channels, n_classes) -> nn.Module` with `features` and `head`."""
from typing import Callable

from torch import nn

from engine.registry import Registry

REGISTRY: Registry[Callable[..., nn.Module]] = Registry("backbone")


def build_backbone(name: str, in_channels: int, n_classes: int) -> nn.Module:
    return REGISTRY.get(name)(in_channels, n_classes)


from engine.backbones import resnet, resnet_imagenet  # noqa: E402,F401
