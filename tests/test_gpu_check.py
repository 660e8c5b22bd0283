"""benchmarks/gpu_check.py runs here with --device cpu: the CPU parts measure, the GPU parts say why not."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_skips_the_gpu_parts_with_the_reason():
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"^host .*avx2 (yes|no)", run.stdout, re.M)
    for norm in ("bn", "tbbn", "adab2n"):
        assert re.search(rf"^  {norm}: [\d.]+ steps/s on cpu$", run.stdout, re.M)
    assert run.stdout.count("skipped: --device cpu") == 3
