"""seq-synth: generated class-conditional images of any size, for tests and benchmarks.

Each class is a fixed random low-frequency pattern; samples add pixel noise. Deterministic
from `data_seed`, independent of the trial seed (which only sets the class order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from engine.datasets import REGISTRY
from engine.datasets.base import RawData
from engine.options import Option

OPTIONS = {
    "n_classes": Option(int, 10, "number of classes", low=2),
    "train_per_class": Option(int, 40, "training images per class", low=1),
    "test_per_class": Option(int, 10, "test images per class", low=1),
    "image_size": Option(int, 16, "height = width in pixels", low=4),
    "channels": Option(int, 3, "image channels", low=1),
    "noise": Option(float, 40.0, "pixel noise std (0..255 scale)", low=0),
    "data_seed": Option(int, 0, "seed of the generated data", low=0),
}


@REGISTRY.register("seq-synth",
                   n_tasks=5, mean=(0.5,), std=(0.25,),
                   crop_padding=2, flip=True, default_backbone="resnet18_reduced", options=OPTIONS,
                   geometry=lambda o: (o["n_classes"], (o["channels"], o["image_size"], o["image_size"])),
                   rows=lambda o: (o["train_per_class"] * o["n_classes"], o["test_per_class"] * o["n_classes"]),
                   source="generated in memory")
def load_synth(root: Path, o: Mapping[str, Any]) -> RawData:
    g = torch.Generator().manual_seed(o["data_seed"])
    k, c, s = o["n_classes"], o["channels"], o["image_size"]
    coarse = torch.rand(k, c, 4, 4, generator=g) * 255
    prototypes = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(k).repeat_interleave(per_class)
        # prototype + noise, in place on the one float tensor (rows are grouped by class): a
        # benchmark-sized stream needs no further float copies, which would stay in the heap
        x = torch.randn(len(y), c, s, s, generator=g).mul_(o["noise"])
        x.view(k, per_class, c, s, s).add_(prototypes[:, None])
        return x.clamp_(0, 255).to(torch.uint8), y

    (xtr, ytr), (xte, yte) = draw(o["train_per_class"]), draw(o["test_per_class"])
    return RawData(xtr, ytr, xte, yte, n_classes=k)
