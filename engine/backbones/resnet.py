"""ResNets as the continual-learning literature uses them.

- resnet18 / resnet18_reduced: mammoth's ResNet-18 (3x3 stride-1 stem, no max-pool), nf=64 / 20.
- resnet32: the CIFAR ResNet-32 of the offline protocol (FACIL/TBBN): 3 stages x 5 basic blocks,
  16/32/64 channels.
Every network is `features(x) -> [N, D]` then `head` (a Linear, or a cosine head for LUCIR), and
keeps BatchNorm2d so `engine.norms.install` can swap it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.backbones import REGISTRY


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))
        self.last_relu = True  # LUCIR removes the final block's ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on the norm's output, as torchvision's ResNet does: no norm layer keeps its
        # output for backward, so the values are the same and a step holds one activation less
        # per norm (benchmarks/RESULTS.md: ~35 MB less peak memory for ResNet-18 on 30 rows).
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu_(out) if self.last_relu else out


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], widths: list[int], strides: list[int], in_channels: int,
                 n_classes: int, stem_width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        layers, planes = [], stem_width
        for n, width, stride in zip(blocks, widths, strides):
            stage = []
            for s in [stride] + [1] * (n - 1):
                stage.append(BasicBlock(planes, width, s))
                planes = width
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.feature_dim = planes
        self.head: nn.Module = nn.Linear(planes, n_classes)

    def last_block(self) -> BasicBlock:
        return self.layers[-1][-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@REGISTRY.register("resnet18")
def resnet18(in_channels: int, n_classes: int, nf: int = 64) -> ResNet:
    return ResNet([2, 2, 2, 2], [nf, 2 * nf, 4 * nf, 8 * nf], [1, 2, 2, 2], in_channels, n_classes, nf)


@REGISTRY.register("resnet18_reduced")
def resnet18_reduced(in_channels: int, n_classes: int) -> ResNet:
    return resnet18(in_channels, n_classes, nf=20)


@REGISTRY.register("resnet32")
def resnet32(in_channels: int, n_classes: int) -> ResNet:
    return ResNet([5, 5, 5], [16, 32, 64], [1, 2, 2], in_channels, n_classes, 16)
