"""The GPUs of a local sweep, followed while it runs: trials go where others' load leaves room.

Every GPU the user allows is in Ray from the start, counted as Ray's GPUs and as one custom
resource each, `gpu:<uuid>` (capacity 1). A trial asks for its share of both, so Ray's own
accounting keeps each GPU within its capacity and the dashboard shows the use. The pool only
decides which GPU the next trial names, from an NVML reading at most `waitsecs` old:
- a GPU that others have made busy gets no new trial (ours running on it go on);
- a GPU that has become idle again gets trials again;
- of the usable GPUs with room for the trial's share, the least loaded one gets it.
Our own load is not "busy": memory held by this launcher's process tree (Ray's workers) is
subtracted, and a GPU running our trials is judged by memory alone (gpus.busy_why).
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

from orchestrator import gpus

Say = Callable[[str], None]


def resource_name(uuid: str) -> str:
    """The Ray custom resource of one GPU (or MIG instance)."""
    return f"gpu:{uuid}"


def our_pids() -> set[int]:
    """This process and its descendants: the local Ray's raylet and workers run our trials."""
    import psutil

    me = psutil.Process(os.getpid())
    return {me.pid, *(p.pid for p in me.children(recursive=True))}


class GpuPool:
    def __init__(self, statuses: list[gpus.GpuStatus], threshold: float, waitsecs: float,
                 probe: Callable[[], gpus.Probe], say: Say = print, clock: Callable[[], float] = time.monotonic):
        self.gpus = {g.uuid: g for g in statuses}      # latest reading of each, in the user's order
        self.threshold, self.waitsecs = threshold, waitsecs
        self.probe, self.say, self.clock = probe, say, clock
        self.ours = dict.fromkeys(self.gpus, 0)         # our trials placed on each (pending or running)
        self.load = dict.fromkeys(self.gpus, 0.0)       # the sum of their GPU shares (Ray's view)
        self.held: dict[str, str] = {}                  # uuid -> why it gets no new trial
        self._read_at = -math.inf
        self._blind = False                             # the last reading failed

    def place(self, share: float) -> str | None:
        """The GPU for a trial asking `share` of one (taken now), or None while no usable GPU
        has room for it."""
        self.refresh()
        free = [u for u in self.gpus if u not in self.held and self.load[u] + share <= 1 + 1e-9]
        if not free:
            return None
        uuid = min(free, key=self.load.__getitem__)   # ties: the user's order
        self.ours[uuid] += 1
        self.load[uuid] += share
        return uuid

    def release(self, uuid: str, share: float) -> None:
        self.ours[uuid] -= 1
        self.load[uuid] = max(self.load[uuid] - share, 0.0) if self.ours[uuid] else 0.0

    def refresh(self, force: bool = False) -> None:
        """Re-read NVML when the last reading is `waitsecs` old; say what changed."""
        now = self.clock()
        if not force and now - self._read_at < self.waitsecs:
            return
        self._read_at = now
        reading = self.probe()
        seen = {g.uuid: g for g in reading.gpus}
        if not seen:   # NVML failed for a moment: keep the last judgment rather than guess
            if not self._blind:
                self.say(f"GPUs: NVML reading failed ({reading.why_none}); keeping the last GPU states")
            self._blind = True
            return
        self._blind = False
        for uuid in self.gpus:
            g = seen.get(uuid)
            if g is not None:
                self.gpus[uuid] = g
            why = "NVML no longer reports it" if g is None else gpus.busy_why(g, self.threshold, self.ours[uuid] > 0)
            if why == self.held.get(uuid):
                continue
            label = f"{self.gpus[uuid].label} ({uuid})"
            if why is None:
                del self.held[uuid]
                self.say(f"GPUs: {label} is idle again: it gets trials")
            else:
                if uuid not in self.held:
                    running = f"; our {self.ours[uuid]} trials on it go on" if self.ours[uuid] else ""
                    self.say(f"GPUs: {label} held back, {why}{running}")
                self.held[uuid] = why

    def line(self) -> str:
        """For the progress line: which GPUs run our trials, and which are held back."""
        use = ", ".join(f"{self.gpus[u].label} {self.ours[u]} ({self.load[u]:.0%})" for u in self.gpus if u not in self.held)
        parts = [f"GPUs {use or 'none usable'}"]
        if self.held:
            parts.append("held back " + ", ".join(
                f"{self.gpus[u].label}" + (f" ({self.ours[u]} ours)" if self.ours[u] else "") for u in self.held))
        return " | ".join(parts)
