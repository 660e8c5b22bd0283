"""Where a trial's tensors live and how they run there: the device, the network's memory format,
whether the optimizer updates inside backward, and the chunk size of eval-mode forwards."""
from __future__ import annotations

import torch
from torch import nn

from engine.errors import ConfigError

# oneDNN's CPU convolutions run ~10% faster (training and inference, ResNet-18 at 32 px,
# benchmarks/RESULTS.md) on channels-last (NHWC) tensors; CUDA keeps the default NCHW.
MEMORY_FORMATS = {"cpu": torch.channels_last}
# Optimizer updates applied inside backward, parameter by parameter (engine/optim.py): on the CPU
# that keeps the gradients from piling up beside the activations (~45 MB less peak, ResNet-18, 30
# rows); on CUDA memory is plentiful and one foreach update beats ~60 small ones per step.
UPDATE_IN_BACKWARD = {"cpu": True}
# Rows per eval-mode forward. CPU: chunks of a training batch's size run as fast as larger ones
# (cache) and reuse the memory the training steps freed, so evaluation adds nothing to the peak.
EVAL_CHUNKS = {"cpu": 32, "cuda": 1024}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def place(net: nn.Module, device: torch.device) -> nn.Module:
    """Move `net` to `device` in the memory format its convolutions are fastest in there; the
    convolutions then produce that format and the layers after them keep it."""
    return net.to(device=device, memory_format=MEMORY_FORMATS.get(device.type, torch.contiguous_format))


def update_in_backward(device: torch.device) -> bool:
    return UPDATE_IN_BACKWARD.get(device.type, False)


def eval_chunk(device: torch.device) -> int:
    return EVAL_CHUNKS.get(device.type, 1024)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"
