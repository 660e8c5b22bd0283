"""seq-digits: scikit-learn's bundled 8x8 handwritten digits (offline, no download), 5 tasks x 2.

1797 images; a fixed stratified 80/20 train/test split (seeded, independent of the trial seed).
Pixel values 0..16 are scaled to uint8 0..255. Augmentation: 1-pixel random crop, no flip
(digits are not mirror-symmetric).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engine.datasets import REGISTRY
from engine.datasets.base import RawData, fixed


@REGISTRY.register("seq-digits",
                   n_tasks=5, mean=(0.30,), std=(0.38,), crop_padding=1,
                   flip=False, default_backbone="resnet18_reduced", geometry=fixed(10, (1, 8, 8)),
                   rows=lambda o: (1_442, 355),
                   source="scikit-learn's bundled digits (no download)")
def load_digits(root: Path, options: Mapping[str, Any]) -> RawData:
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[:, None]  # N,1,8,8
    labels = bunch.target.astype(np.int64)
    rng = np.random.RandomState(0)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):  # stratified: 20% of every class goes to the test split
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: len(idx) // 5]] = True
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return RawData(x[~torch.from_numpy(test)], y[~torch.from_numpy(test)],
                   x[torch.from_numpy(test)], y[torch.from_numpy(test)], n_classes=10)
