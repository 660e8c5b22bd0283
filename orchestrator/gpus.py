"""Which GPUs are idle, read from NVML (package nvidia-ml-py, module pynvml).

Ray counts GPUs but does not see other users' load, so the launcher picks idle GPUs here and
starts Ray with only those visible (CUDA_VISIBLE_DEVICES, in NVML's PCI bus order).
A GPU is idle when both its memory used fraction and its utilization are below the threshold
(run.py looked at memory only; a GPU at 100% utilization with little memory is not idle).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class GpuStatus:
    index: int                 # NVML index = PCI bus order
    name: str
    memory_used: float         # fraction of total memory in use
    utilization: float         # fraction of time a kernel ran (last sample period)
    processes: int             # compute processes running on it

    def describe(self) -> str:
        return (f"GPU{self.index} {self.name}: memory {self.memory_used:.0%}, "
                f"utilization {self.utilization:.0%}, {self.processes} processes")


def probe() -> tuple[list[GpuStatus], str | None]:
    """(GPUs, None), or ([], why) when NVML is unavailable (no driver, no library)."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable ({exc})"
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            try:
                procs = len(pynvml.nvmlDeviceGetComputeRunningProcesses(h))
            except pynvml.NVMLError:
                procs = 0
            name = pynvml.nvmlDeviceGetName(h)
            out.append(GpuStatus(i, name.decode() if isinstance(name, bytes) else str(name),
                                 mem.used / max(mem.total, 1), util.gpu / 100.0, procs))
        return out, None
    except pynvml.NVMLError as exc:
        return [], f"NVML query failed ({exc})"
    finally:
        pynvml.nvmlShutdown()


def idle(gpus: list[GpuStatus], threshold: float) -> list[int]:
    return [g.index for g in gpus if g.memory_used < threshold and g.utilization < threshold]


def wait_for_idle(threshold: float, waitsecs: float, say: Callable[[str], None],
                  probe_fn: Callable[[], tuple[list[GpuStatus], str | None]] = probe,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[list[int], str | None]:
    """Idle GPU indices, re-probing every `waitsecs` while GPUs exist but none is idle.

    Returns ([], reason) when there is no GPU or no NVML: the sweep then runs on CPUs.
    """
    announced = False
    while True:
        gpus, why = probe_fn()
        if not gpus:
            return [], why or "no GPU found"
        free = idle(gpus, threshold)
        if free:
            return free, None
        if not announced:
            say(f"all {len(gpus)} GPUs are busy (idle means memory and utilization below "
                f"{threshold:.0%}); re-probing every {waitsecs:g} s, Ctrl-C to stop:")
            for g in gpus:
                say(f"  {g.describe()}")
            announced = True
        sleep(waitsecs)
