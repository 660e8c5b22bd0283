"""What the benchmarks share: the host they ran on, and a child process measured.

Every number in RESULTS.md names its host (these VMs land on AMD EPYC AVX2-only hosts and on
Intel Xeon hosts with AMX, and the ratios differ between them), so every benchmark prints `host()`.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")   # what decides the fp32 and bf16 speed on a CPU
# The engine benchmark's images (seq-synth, CIFAR-sized), which the AdaB2N reference also trains on
DATA_ARGS = "n_classes=10,train_per_class=200,test_per_class=50,image_size=32,channels=3"


def host() -> str:
    """The CPU, its flags that matter and its core count, e.g. "AMD EPYC (avx2 yes, ...), 2 CPUs"."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown CPU")
    sys.path.insert(0, str(ROOT))
    from engine.device import cpu_flags   # the engine's own reading, the one --precision bf16 trusts

    flags = cpu_flags()
    named = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)
    return f"{model} ({named}), {os.cpu_count()} CPUs"


def run_measured(cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """Run `cmd` (in `cwd`, with `env` added to this environment); its stdout, wall seconds and its
    peak RSS in MiB (os.wait4: this child and the children it waited for, e.g. DataLoader workers,
    whichever was largest)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed with status {proc.returncode}")
    return out, time.perf_counter() - start, usage.ru_maxrss / 1024
