"""One status line for the whole sweep (done / running / failed / pending, ETA), not a wall of logs.

On a terminal the line is redrawn in place; otherwise (CI, `| tee`) it is printed every
`every_s` seconds and whenever a trial ends. Failures and retries get a line each, naming the
trial's log file. The ETA counts tasks finished in this run (a resumed trial's earlier tasks
do not inflate the rate). Every event costs O(1), whatever the sweep's size: the counts and
the ETA's sums are kept up to date, not recomputed over all trials.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO


@dataclass
class TrialProgress:
    n_tasks: int
    units: float = 0.0          # tasks done, with a fraction for the running task's epochs
    base: float | None = None   # units done before this run (first report tells)
    state: str = "pending"      # pending | running | done | failed


class ProgressBoard:
    def __init__(self, n_tasks: dict[str, int], already_done: int, stream: TextIO | None = None,
                 every_s: float = 30.0):
        self.trials = {tid: TrialProgress(n) for tid, n in n_tasks.items()}
        self.already_done = already_done
        self._counts = {"done": already_done, "running": 0, "failed": 0, "pending": len(self.trials)}
        self._units_here = 0.0                                    # sum of units - base: this run's work
        self._units_left = float(sum(n_tasks.values()))           # tasks left of running + pending trials
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = every_s if not self.tty else 1.0
        self.retries = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False
        self._due: float | None = None
        self.status: Callable[[], str] | None = None   # more to show at the line's end (the GPUs)

    def __getstate__(self):  # Tune pickles its callbacks (tuner.pkl); a terminal stream does not pickle
        state = dict(self.__dict__)
        state["stream"] = state["status"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = sys.stdout

    # ---- events ---------------------------------------------------------------------------------
    def started_trial(self, tid: str) -> None:
        self._set_state(self.trials[tid], "running")
        self.draw()

    def reported(self, tid: str, result: dict) -> None:
        t = self.trials[tid]
        if "tasks_done" not in result:
            return
        done = float(result["tasks_done"])
        if result.get("epoch") and result.get("epochs"):   # inside a task: a fraction of it
            units, first = done + result["epoch"] / result["epochs"], done
        else:                                               # a task just ended
            units, first = done, done - 1
        if t.base is None:
            t.base = max(first, 0.0)
            self._units_here -= t.base
        self._add_units(t, max(t.units, units))
        self.draw()

    def ended(self, tid: str, ok: bool, line: str | None = None) -> None:
        t = self.trials[tid]
        if ok:
            if t.base is None:
                t.base = 0.0
            self._add_units(t, float(t.n_tasks))
        self._set_state(t, "done" if ok else "failed")
        if line:
            self.event(line)
        # Off a terminal, print once the replacement trial has started (see tick), so the line
        # does not show a momentary "one fewer running".
        self._due = None if self.tty else time.monotonic() + 0.5
        self.draw(force=self.tty)

    def tick(self) -> None:
        """Called on every step of Tune's loop: print a due line, or the periodic one."""
        if self._due is not None and time.monotonic() >= self._due:
            self._due = None
            self.draw(force=True)
        else:
            self.draw()

    def retried(self, line: str) -> None:
        self.retries += 1
        self.event(line)

    def event(self, line: str) -> None:
        """A line of its own, above the status line."""
        if self.tty and self._drawn:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self.stream.flush()
        self._drawn = False

    # ---- rendering ------------------------------------------------------------------------------
    def _set_state(self, t: TrialProgress, state: str) -> None:
        if t.state in ("running", "pending") and state in ("done", "failed"):
            self._units_left -= t.n_tasks - t.units
        self._counts[t.state] -= 1
        self._counts[state] += 1
        t.state = state

    def _add_units(self, t: TrialProgress, units: float) -> None:
        if t.base is not None:
            self._units_here += units - t.units
        if t.state in ("running", "pending"):
            self._units_left -= units - t.units
        t.units = units

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self._units_here <= 0 or elapsed <= 0:
            return None
        return max(self._units_left, 0.0) / (self._units_here / elapsed)

    def line(self) -> str:
        c = self.counts()
        total = sum(c.values())
        eta = self.eta_s()
        parts = [f"trials {total}: done {c['done']}", f"running {c['running']}", f"failed {c['failed']}",
                 f"pending {c['pending']}"]
        if self.retries:
            parts.append(f"retries {self.retries}")
        parts.append(f"elapsed {_duration(time.monotonic() - self.started)}")
        parts.append(f"ETA {_duration(eta) if eta is not None else '?'}")
        if self.status is not None:
            parts.append(self.status())
        return " | ".join(parts)

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.every_s:
            return
        self._last_draw = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
            self._drawn = True
        else:
            self.stream.write(f"[{time.strftime('%H:%M:%S')}] {self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
        elif not self.tty and (self._due is not None or time.monotonic() - self._last_draw > 1.0):
            self.draw(force=True)
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
