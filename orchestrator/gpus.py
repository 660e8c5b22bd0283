"""Which GPUs a sweep may use and which are idle, read from NVML (package nvidia-ml-py, module pynvml).

Ray counts GPUs but does not see other users' load, so the launcher picks idle GPUs here and
starts Ray with only those visible (CUDA_VISIBLE_DEVICES, by UUID).
- The user's own CUDA_VISIBLE_DEVICES (indices in PCI bus order, or UUIDs and their prefixes, as
  CUDA takes them) limits the GPUs considered at all.
- A GPU is idle when both its memory used fraction and its utilization are below the threshold
  (run.py looked at memory only; a GPU at 100% utilization with little memory is not idle).
  Where NVML cannot report utilization (MIG instances, some boards), memory alone decides, and
  the GPU says so in its description: a GPU is never dropped because one query is unsupported.
- A GPU in MIG mode is used through its MIG instances, each a device of its own (its MIG UUID).
- GPUs this torch build has no kernels for, or a driver older than its CUDA, are refused before
  Ray starts (`check_runnable`), so no trial is handed a GPU it cannot use.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from engine.device import has_kernels


@dataclass(frozen=True)
class GpuStatus:
    index: int                        # NVML index = PCI bus order (a MIG instance: its GPU's)
    name: str
    memory_used: float                # fraction of total memory in use
    utilization: float | None         # fraction of time a kernel ran; None: NVML cannot tell
    processes: int                    # compute processes running on it
    uuid: str = ""                    # GPU-... or MIG-...: what CUDA_VISIBLE_DEVICES names
    capability: tuple[int, int] | None = None   # CUDA compute capability (major, minor)
    mig: int | None = None            # MIG instance number on its GPU, None for a whole GPU
    memory_total: int = 0             # bytes

    @property
    def label(self) -> str:
        return f"GPU{self.index}" + (f"/MIG{self.mig}" if self.mig is not None else "")

    def describe(self) -> str:
        util = "n/a (judged by memory)" if self.utilization is None else f"{self.utilization:.0%}"
        return (f"{self.label} {self.name} ({self.uuid}): memory {self.memory_used:.0%}, "
                f"utilization {util}, {self.processes} processes")


@dataclass(frozen=True)
class Probe:
    """One NVML reading: the GPUs the user allows, the driver's CUDA version, or why none."""
    gpus: list[GpuStatus]
    why_none: str | None = None
    driver_cuda: tuple[int, int] | None = None     # highest CUDA version the driver supports


def probe(visible: str | None = None) -> Probe:
    """Every GPU NVML sees (MIG instances in place of their GPU), limited to `visible`
    (the user's CUDA_VISIBLE_DEVICES; None: no limit)."""
    try:
        import pynvml
    except ImportError:
        return Probe([], "nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return Probe([], f"NVML unavailable ({exc})")
    try:
        out: list[GpuStatus] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            cap = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(h))
            instances = _mig_instances(pynvml, h)
            if instances is None:
                out.append(_status(pynvml, h, i, _text(pynvml.nvmlDeviceGetName(h)), cap, None))
            else:
                name = _text(pynvml.nvmlDeviceGetName(h))
                out += [_status(pynvml, m, i, name, cap, k) for k, m in instances]
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        chosen = select_visible(out, visible)
        return Probe(chosen, None if chosen else _why_empty(out, visible), (cuda // 1000, cuda % 1000 // 10))
    except pynvml.NVMLError as exc:
        return Probe([], f"NVML query failed ({exc})")
    finally:
        pynvml.nvmlShutdown()


def _status(pynvml, handle, index: int, name: str, cap, mig: int | None) -> GpuStatus:
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        util: float | None = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
    except pynvml.NVMLError:   # MIG instances and some boards: not supported
        util = None
    try:
        procs = len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except pynvml.NVMLError:
        procs = 0
    return GpuStatus(index, name, mem.used / max(mem.total, 1), util, procs,
                     uuid=_text(pynvml.nvmlDeviceGetUUID(handle)), capability=cap, mig=mig,
                     memory_total=int(mem.total))


def _mig_instances(pynvml, handle) -> list[tuple[int, object]] | None:
    """The MIG instances of a GPU in MIG mode, None for a GPU used whole."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:   # not a MIG-capable GPU
        return None
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return None
    out = []
    for k in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            out.append((k, pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)))
        except pynvml.NVMLError:   # an empty slot
            continue
    return out


def select_visible(gpus: list[GpuStatus], visible: str | None) -> list[GpuStatus]:
    """The GPUs CUDA_VISIBLE_DEVICES allows, in its order. As in CUDA, entries are indices
    (PCI bus order here: the launcher sets CUDA_DEVICE_ORDER=PCI_BUS_ID) or UUIDs or unique
    UUID prefixes, and the list ends at the first entry that names no device."""
    if visible is None:
        return list(gpus)
    chosen: list[GpuStatus] = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit():   # a GPU in MIG mode: the index names all its instances
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if g.uuid == entry] or [g for g in gpus if entry and g.uuid.startswith(entry)]
            if len(match) > 1:   # an ambiguous prefix names no device
                match = []
        if not match:
            break
        chosen += [g for g in match if g not in chosen]
    return chosen


def _why_empty(all_gpus: list[GpuStatus], visible: str | None) -> str:
    if not all_gpus:
        return "no GPU found"
    return f"CUDA_VISIBLE_DEVICES={visible!r} allows none of the {len(all_gpus)} GPUs NVML sees"


def idle(gpus: Iterable[GpuStatus], threshold: float) -> list[GpuStatus]:
    return [g for g in gpus if g.memory_used < threshold and (g.utilization is None or g.utilization < threshold)]


def check_runnable(reading: Probe, arch_list: list[str], build_cuda: str | None) -> str | None:
    """Why this torch build cannot run on these GPUs (one line), or None.

    `arch_list` is torch.cuda.get_arch_list(), `build_cuda` torch.version.cuda. Kernels are
    matched by engine.device.has_kernels (a trial checks its GPU the same way); the driver must
    support the build's CUDA major version.
    """
    if not reading.gpus:
        return None
    if build_cuda is None:
        return "this torch build has no CUDA; install a CUDA build of torch or pass --gpus_per_trial 0"
    need = tuple(int(p) for p in build_cuda.split(".")[:2])
    if reading.driver_cuda is not None and reading.driver_cuda[0] < need[0]:
        return (f"the NVIDIA driver supports CUDA up to {reading.driver_cuda[0]}.{reading.driver_cuda[1]} "
                f"but this torch build needs CUDA {build_cuda}: update the driver, install a torch build "
                "for it, or pass --gpus_per_trial 0")
    bad = [g for g in reading.gpus if g.capability is not None and not has_kernels(g.capability, arch_list)]
    if bad:
        g = bad[0]
        return (f"{g.label} {g.name} (sm_{g.capability[0]}{g.capability[1]}) cannot run this torch build "
                f"(kernels for {', '.join(arch_list) or 'none'}): leave it out with CUDA_VISIBLE_DEVICES, "
                "install a torch build for it, or pass --gpus_per_trial 0")
    return None


def wait_for_idle(threshold: float, waitsecs: float, say: Callable[[str], None],
                  probe_fn: Callable[[], Probe] = probe,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[list[GpuStatus], str | None]:
    """Idle GPUs, re-probing every `waitsecs` while GPUs exist but none is idle.

    Returns ([], reason) when there is no GPU or no NVML: the sweep then runs on CPUs.
    """
    announced = False
    while True:
        reading = probe_fn()
        if not reading.gpus:
            return [], reading.why_none or "no GPU found"
        free = idle(reading.gpus, threshold)
        if free:
            return free, None
        if not announced:
            say(f"all {len(reading.gpus)} GPUs are busy (idle means memory and utilization below "
                f"{threshold:.0%}); re-probing every {waitsecs:g} s, Ctrl-C to stop:")
            for g in reading.gpus:
                say(f"  {g.describe()}")
            announced = True
        sleep(waitsecs)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
