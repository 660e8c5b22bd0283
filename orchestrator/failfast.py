"""Stop a broken sweep early: once `limit` trials failed with the same deterministic error
(a config the engine refuses, a data or code error), the rest would fail the same way.

Not counted: crashes and out-of-memory (the process, not the config, may be at fault: Tune
retries those) and non-finite losses (a property of one grid point, e.g. a too-large lr).
Tune stops every running trial when `stop_all()` turns true; the trials not started stay
pending in the ledger, so the same command runs them once the cause is fixed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ray import tune


@dataclass
class Tripped:
    error: str
    count: int
    log_file: str | None


class FailFast(tune.Stopper):
    def __init__(self, limit: int):
        self.limit = limit                     # 0: never stop
        self.counts: Counter[str] = Counter()
        self.tripped: Tripped | None = None

    def failed(self, error: str, log_file: str | None, deterministic: bool) -> None:
        if not (self.limit and deterministic) or self.tripped:
            return
        self.counts[error] += 1
        if self.counts[error] >= self.limit:
            self.tripped = Tripped(error, self.counts[error], log_file)

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.tripped is not None


def is_crash(exc: BaseException | str | None) -> bool:
    """A dead process or an out-of-memory: worth Tune's retries, not a reason to stop the sweep."""
    from ray import exceptions as rx

    cause = getattr(exc, "cause", None) or exc
    return (isinstance(cause, (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError,
                               rx.OutOfMemoryError, MemoryError))
            or "out of memory" in str(cause).lower())   # torch's CPU and CUDA OOM say so
