"""What a trial needs before it runs, found without data and without memory: its build on the
meta device (the launcher's pre-flight) and its peak GPU memory (the launcher packs GPUs by it).

peak = CUDA context + dataset on the device + model state + replay buffer
       + max(training activations, evaluation activations) x allocator slack
- training activations: what autograd saves for backward in the network's forward and loss
  at the step's largest batch (bs + 2 x minibatch_size: DER++ draws replay twice), measured
  on the meta device with saved_tensors_hooks;
- evaluation: no-grad forwards of `eval_chunk` rows keep about two layer outputs alive, beside
  the folded network's convolution weights (engine/folding.py);
- model state: weights, gradients and momentum, plus the old model's copy for the methods
  that keep one;
- the dataset: uint8 images and int64 labels on the device; where the images stay on the host
  (datasets.base.images_on_host), the labels and the training images of the task being trained
  (of all tasks for methods that train on every seen task).
The constants are upper-end figures for torch 2.x; benchmarks/gpu_check.py prints this estimate
against the measured peak on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import TrialConfig

CUDA_CONTEXT_BYTES = 768 << 20      # context, cuBLAS/cuDNN workspaces (lazy module loading)
ALLOCATOR_SLACK = 1.3               # the caching allocator's rounding and fragmentation
MiB, GiB = 1 << 20, 1 << 30


@dataclass(frozen=True)
class MemoryEstimate:
    context: int
    data: int
    model: int
    buffer: int
    activations: int     # training or evaluation, whichever is larger, with the slack

    @property
    def total(self) -> int:
        return self.context + self.data + self.model + self.buffer + self.activations

    def describe(self) -> str:
        parts = {"data": self.data, "model": self.model, "buffer": self.buffer,
                 "activations": self.activations, "CUDA context": self.context}
        return f"{gib(self.total)} (" + ", ".join(f"{k} {gib(v)}" for k, v in parts.items() if v) + ")"


def gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= 100 * MiB else f"{n / MiB:.0f} MiB"


def build_on_meta(cfg: TrialConfig):
    """The trial's dataset (one placeholder image per class, from the declared geometry) and
    method (network, optimizer, buffer) on the meta device: every check of the build runs,
    nothing is allocated."""
    from engine.datasets import REGISTRY, ContinualDataset, RawData
    from engine.trainer import build_trial

    spec = REGISTRY.get(cfg.dataset)
    n_classes, shape = spec.geometry(cfg.data_args)
    x = torch.zeros(1, *shape, dtype=torch.uint8).expand(n_classes, *shape)  # one image per class
    y = torch.arange(n_classes)
    # the placeholder images stay on the CPU (ops on meta tensors would import torch._dynamo: ~3 s)
    dataset = ContinualDataset(spec, RawData(x, y, x, y, n_classes), n_tasks=cfg.n_tasks, seed=0,
                               device=torch.device("cpu"), nc_first_task=cfg.nc_first_task)
    meta = torch.device("meta")
    with meta:
        return build_trial(cfg, meta, dataset)


def estimate(cfg: TrialConfig) -> MemoryEstimate:
    """The peak GPU memory of this (resolved) trial."""
    from engine.datasets import REGISTRY
    from engine.datasets.base import images_on_host
    from engine.device import eval_chunk

    cfg = cfg.resolved()
    dataset, method = build_on_meta(cfg)
    shape = dataset.input_shape
    image = shape[0] * shape[1] * shape[2]
    rows = REGISTRY.get(cfg.dataset).rows(cfg.data_args)
    data = sum(rows) * (image + 8)
    if images_on_host(sum(rows) * image, torch.device("cuda")):   # labels + the largest task's images
        seen = dataset.n_tasks if method.trains_on_seen_tasks else 1
        data = sum(rows) * 8 + rows[0] * image * seen * max(dataset.task_sizes) // dataset.n_classes
    params = sum(p.numel() * p.element_size() for p in method.net.parameters())
    model = params * (3 + int(getattr(method, "keeps_old_model", False)))   # weights, grads, momentum (+ old)
    buffer = cfg.buffer_size * (image + 4 * dataset.n_classes + 16)          # images, logits, labels, tasks
    batch = cfg.bs + 2 * (cfg.minibatch_size or 0)
    saved, largest = saved_activations(method.net, batch, shape)
    evaluation = 2 * largest * eval_chunk(torch.device("cuda"), shape) + params   # + the folded copy's convs
    return MemoryEstimate(context=CUDA_CONTEXT_BYTES, data=data, model=model,
                          buffer=buffer, activations=int(ALLOCATOR_SLACK * max(saved, evaluation)))


def saved_activations(net: torch.nn.Module, rows: int, shape: tuple[int, ...],
                      device: torch.device = torch.device("meta")) -> tuple[int, int]:
    """(bytes autograd saves for backward in one training forward + loss of `rows` rows, bytes
    of the largest saved tensor per row), on the device where `net` lives (meta: no memory)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[id(t)] = t.nelement() * t.element_size()
        return t

    was_training = net.training
    net.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = net(torch.randn(rows, *shape, device=device))
            torch.nn.functional.cross_entropy(out, torch.zeros(rows, dtype=torch.long, device=device))
    finally:
        net.train(was_training)
    return sum(seen.values()), max(seen.values(), default=0) // max(rows, 1)
