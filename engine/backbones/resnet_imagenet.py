"""ResNet-18 with torchvision's ImageNet stem, as TBBN's ImageNet-100 script runs it
(`--network resnet18`, torchvision, not pretrained): 7x7 stride-2 convolution and a 3x3 stride-2
max-pool before the four stages. Same blocks, `features` / `head` contract and BatchNorm2d layers
as the CIFAR-style ResNets, so norms, LUCIR's ReLU removal and the task heads work unchanged.
(Weights keep PyTorch's default initialisation, like the other backbones, not torchvision's
kaiming-normal one.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.backbones import REGISTRY
from engine.backbones.resnet import ResNet


class ImageNetResNet(ResNet):
    def __init__(self, blocks: list[int], widths: list[int], in_channels: int, n_classes: int):
        super().__init__(blocks, widths, [1, 2, 2, 2], in_channels, n_classes, widths[0])
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(F.relu_(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(self.layers(out), 1).flatten(1)


@REGISTRY.register("resnet18_imagenet")
def resnet18_imagenet(in_channels: int, n_classes: int) -> ImageNetResNet:
    return ImageNetResNet([2, 2, 2, 2], [64, 128, 256, 512], in_channels, n_classes)
