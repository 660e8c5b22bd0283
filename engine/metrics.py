"""Accuracy matrix -> the four summary metrics of algorithms.md §5.

`acc[i][j]` is the accuracy (%) on task j after training task i, for j <= i (lower triangle).
"""
from __future__ import annotations

from statistics import mean
from typing import Sequence


def summarize(acc: Sequence[Sequence[float]]) -> dict[str, float | None]:
    last = len(acc) - 1
    out: dict[str, float | None] = {
        "faa": mean(acc[last]),
        "caa": mean(mean(row[: i + 1]) for i, row in enumerate(acc)),
        "ffm": None,
        "bwt": None,
    }
    if last > 0:
        out["ffm"] = mean(max(acc[i][j] for i in range(j, last)) - acc[last][j] for j in range(last))
        out["bwt"] = mean(acc[last][j] - acc[j][j] for j in range(last))
    return out
