"""What a running trial tells its caller: the engine/orchestrator seam, as typed events.

`run_trial(cfg, out_dir, progress)` calls `progress(event)` with an `EpochEnd` after every epoch
of a multi-epoch task and a `TaskEnd` after every task (trained, evaluated, checkpointed). The
CLI prints `TaskEnd.line()`; the orchestrator writes that same line to the trial's log and turns
the fields into Tune reports, W&B rows and Ray metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class EpochEnd:
    task: int                      # 0-based
    epoch: int                     # 0-based, counted over the task's stages
    epochs: int                    # the task's epochs, all stages
    lr: float                      # the rate this epoch trained at
    val_loss: float | None = None  # offline selection "val": this epoch's validation loss


@dataclass(frozen=True)
class TaskEnd:
    task: int                      # 0-based
    n_tasks: int
    steps: int                     # optimizer steps so far, all tasks
    class_il_acc: float            # mean over the tasks seen so far (%)
    task_il_acc: float
    acc_matrix: dict[str, list[list[float]]]
    checkpoint: str                # the task-boundary checkpoint just written
    wall_time_s: float             # the trial's time so far, over restarts

    def line(self) -> str:
        """The trial's log line for this task (the CLI's stderr and the sweep's log file)."""
        return (f"task {self.task + 1}/{self.n_tasks}: class-IL {self.class_il_acc:.2f}  "
                f"task-IL {self.task_il_acc:.2f}  ({self.steps} steps, {self.wall_time_s:.1f} s)")

    @property
    def steps_per_s(self) -> float | None:
        return self.steps / self.wall_time_s if self.wall_time_s > 0 else None


Event = Union[EpochEnd, TaskEnd]
Progress = Callable[[Event], None]
