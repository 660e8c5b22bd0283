"""Batched train-time augmentation on the trial's device: one random draw per sample, no loops."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random HxW window per sample (torchvision's RandomCrop)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    rows = (top + torch.arange(h, device=x.device))[:, None, :, None]       # B,1,H,1
    cols = (left + torch.arange(w, device=x.device))[:, None, None, :]      # B,1,1,W
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)
