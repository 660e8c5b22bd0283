"""Which rows every training step takes: one epoch's batches for each kind of method (online,
FACIL's two streams of current and exemplar rows, EEIL's mixed balanced stream), on the device."""
from __future__ import annotations

import torch

from engine.config import TrialConfig
from engine.methods.base import Method


def epoch_batches(method: Method, n_rows: int, memory: dict[str, torch.Tensor] | None,
                  cfg: TrialConfig, mixed: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Row indices of every step: (current rows, memory rows or None).

    - online methods: `bs` current rows per step (replay is drawn inside the step);
    - memory-stream methods, empty memory (t = 0): full batches of `bs + minibatch_size` current
      rows (FACIL's 64, drop_last);
    - memory-stream methods: two shuffled streams, `bs` current and `minibatch_size` memory rows
      per step, current first; an epoch is the longer stream, the shorter one is cycled (a fresh
      shuffle per pass; FACIL's itertools.cycle replays its first pass), and a step where either
      stream has only a partial batch is skipped, as the TBBN code skips batches != 64.
      A stream smaller than its batch size is one batch of all its rows.
    - `mixed` (EEIL's class-balanced stage): one shuffled stream of `bs + minibatch_size` rows over
      current and memory rows together, so every row is drawn equally often; each batch is split
      back into its current and memory rows (a batch without current rows is skipped).
    """
    device = method.device
    if not method.memory_stream:
        batches = torch.randperm(n_rows, device=device).split(cfg.bs)
        if len(batches) > 1 and batches[-1].numel() == 1:
            batches = batches[:-1]  # batch statistics of one row are undefined (BN raises)
        return [(b, None) for b in batches]
    if memory is None:
        size = min(cfg.bs + cfg.minibatch_size, n_rows)
        return [(b, None) for b in shuffled_stream(n_rows, size, -(-n_rows // size), device) if b is not None]
    n_mem = next(iter(memory.values())).shape[0]
    if mixed:
        n = n_rows + n_mem
        size = min(cfg.bs + cfg.minibatch_size, n)
        batches = [b for b in shuffled_stream(n, size, -(-n // size), device) if b is not None]
        if not batches:
            return []
        # current rows first in each batch (a stable sort keeps both groups' order), then one
        # host sync for every batch's split point, not a boolean-mask compaction per batch
        rows = torch.stack(batches)
        is_mem = rows >= n_rows
        rows = rows.gather(1, torch.sort(is_mem.to(torch.int8), dim=1, stable=True).indices)
        n_cur = (~is_mem).sum(1).tolist()
        return [(b[:k], b[k:] - n_rows) for b, k in zip(rows, n_cur) if k]
    n_c, n_m = min(cfg.bs, n_rows), min(cfg.minibatch_size, n_mem)
    length = max(-(-n_rows // n_c), -(-n_mem // n_m))
    pairs = zip(shuffled_stream(n_rows, n_c, length, device), shuffled_stream(n_mem, n_m, length, device))
    return [(c, m) for c, m in pairs if c is not None and m is not None]


def shuffled_stream(n_rows: int, size: int, length: int, device: torch.device) -> list[torch.Tensor | None]:
    """`length` batches of shuffled passes over `n_rows` rows (reshuffled every pass); a pass's
    partial last batch is None."""
    out: list[torch.Tensor | None] = []
    while len(out) < length:
        out += [b if b.numel() == size else None for b in torch.randperm(n_rows, device=device).split(size)]
    return out[:length]
