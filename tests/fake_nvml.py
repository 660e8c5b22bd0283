"""A stand-in for the pynvml module (nvidia-ml-py), the external library at the edge of
orchestrator/gpus.py: tests describe GPUs, NVML answers about them as the real library would
(its error classes, MIG handles, unsupported queries), and nothing of ours is replaced."""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Callable

import pynvml as real

GB = 1 << 30


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    capability: tuple[int, int] = (9, 0)
    total: int = 80 * GB
    used: int | Callable[[], int] = 1 * GB   # a callable: read at every query (a load that changes)
    utilization: int | None = 0          # percent; None: NVMLError_NotSupported
    processes: int = 0                   # others' processes, memory not reported
    mig: list["FakeGpu"] | None = None   # MIG mode on: its instances
    owners: dict[int, int] | None = None  # pid -> bytes: processes with their memory (NVML's per-process view)


@dataclass
class _Memory:
    total: int
    used: int
    free: int = 0


@dataclass
class _Process:   # pynvml's c_nvmlProcessInfo_t: the fields we read
    pid: int
    usedGpuMemory: int | None


@dataclass
class _Util:
    gpu: int
    memory: int = 0


def fake_pynvml(gpus: list[FakeGpu], driver_cuda: int = 13000, init_error: bool = False) -> types.ModuleType:
    """A module with pynvml's names for these GPUs (in PCI bus order)."""
    m = types.ModuleType("pynvml")
    for name in ("NVMLError", "NVMLError_NotSupported", "NVMLError_InvalidArgument", "NVMLError_NotFound",
                 "NVML_DEVICE_MIG_ENABLE", "NVML_DEVICE_MIG_DISABLE"):
        setattr(m, name, getattr(real, name))
    state = {"init": 0}

    def init():
        if init_error:
            raise real.NVMLError(real.NVML_ERROR_DRIVER_NOT_LOADED)
        state["init"] += 1

    def unsupported():
        raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)

    def utilization(h: FakeGpu):
        return unsupported() if h.utilization is None else _Util(h.utilization)

    def mig_mode(h: FakeGpu):
        if h.mig is None and h.capability < (8, 0):
            unsupported()
        return (real.NVML_DEVICE_MIG_ENABLE if h.mig is not None else real.NVML_DEVICE_MIG_DISABLE,) * 2

    def mig_handle(h: FakeGpu, k: int):
        if h.mig is None or k >= len(h.mig):
            raise real.NVMLError(real.NVML_ERROR_NOT_FOUND)
        return h.mig[k]

    m.nvmlInit = init
    m.nvmlShutdown = lambda: state.__setitem__("init", state["init"] - 1)
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    m.nvmlDeviceGetName = lambda h: h.name
    m.nvmlDeviceGetUUID = lambda h: h.uuid
    m.nvmlDeviceGetCudaComputeCapability = lambda h: h.capability
    def memory(h: FakeGpu):
        used = h.used() if callable(h.used) else h.used
        return _Memory(h.total, used, h.total - used)

    m.nvmlDeviceGetMemoryInfo = memory
    m.nvmlDeviceGetUtilizationRates = utilization
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: (
        [_Process(-1 - k, None) for k in range(h.processes)] + [_Process(p, b) for p, b in (h.owners or {}).items()])
    m.nvmlDeviceGetMigMode = mig_mode
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7
    m.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    m.nvmlSystemGetCudaDriverVersion = lambda: driver_cuda
    m.state = state
    return m
