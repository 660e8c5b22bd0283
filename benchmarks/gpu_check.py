"""The checks to run on the first GPU machine (issue 16), one command, a few minutes:

    python benchmarks/gpu_check.py [--device auto|cpu|cuda] [--trials 8]

1. steps/s of DER++ online (ResNet-18, CIFAR-sized seq-synth) for BN, TBBN and AdaB2N on the device,
   and on CUDA the peak memory reserved against the estimate packing uses (engine/memory.py);
2. host syncs per training step (CUDA: torch.cuda.set_sync_debug_mode counts them);
3. placement: a sweep through the real launcher path (NVML probe, local Ray) puts every trial on
   its own GPU, none on the CPU;
4. packing throughput at 1, 0.5, 0.25 and 0.125 GPU per trial and packed by memory, the
   launcher's default (trials per minute);
5. resume on another GPU: a trial cut after its first task continues on cuda:1 to the same
   task count (needs 2 visible GPUs).
With `--device cpu` (or no CUDA) parts 2-5 are skipped, each with its reason, and 1 runs on the
CPU. Copy the printed lines, with the device named, into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.measure import host  # noqa: E402
from engine.config import TrialConfig  # noqa: E402
from engine.events import TaskEnd  # noqa: E402
from engine.trainer import run_trial  # noqa: E402

CIFAR_LIKE = {"train_per_class": 40, "test_per_class": 10, "image_size": 32, "n_classes": 10}


class Cut(Exception):
    pass


def cfg(norm: str, device: str, seed: int = 0) -> TrialConfig:
    return TrialConfig(dataset="seq-synth", data_args=CIFAR_LIKE, method="derpp", norm=norm,
                       buffer_size=200, seed=seed, device=device)


def host_line() -> str:
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    return f"host {platform.node()}: {host()}; torch {torch.__version__}; GPUs: {gpus}"


def steps_per_s(device: str, tmp: Path) -> None:
    """On CUDA also the peak memory the caching allocator reserved, against the launcher's
    estimate of it (engine/memory.py, less its CUDA-context constant): packing relies on it."""
    from engine.memory import CUDA_CONTEXT_BYTES, estimate, gib

    for norm in ("bn", "tbbn", "adab2n"):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = run_trial(cfg(norm, device), tmp / f"speed_{norm}")
        memory = ""
        if device == "cuda":
            guess = estimate(cfg(norm, device)).total - CUDA_CONTEXT_BYTES
            memory = f"; peak reserved {gib(torch.cuda.max_memory_reserved())}, estimated {gib(guess)}"
        print(f"  {norm}: {result['steps_per_s']:.1f} steps/s on {result['device']}{memory}", flush=True)


def host_syncs(tmp: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = run_trial(cfg("adab2n", "cuda", seed=1), tmp / "syncs")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    print(f"  {syncs} host syncs in {result['steps']} steps (training and evaluation): "
          f"{syncs / result['steps']:.2f} per step", flush=True)


def placement_and_packing(n_trials: int, tmp: Path) -> None:
    from orchestrator import packing, sweep
    from orchestrator.cluster import ClusterOptions, gpu_pool, session
    from orchestrator.ledger import SweepDir
    from orchestrator.runner import RunOptions, run_sweep

    opts = ClusterOptions()
    with session(opts, say=print) as info:
        if not info.gpus:
            print("  skipped: NVML found no GPU")
            return
        for share in (1.0, 0.5, 0.25, 0.125, "by memory"):   # placed as the launcher places them
            trials = sweep.expand(sweep.spec_from_flags(dict(
                datasets=["seq-synth"], models=["derpp"], methods=["bn"], seeds=list(range(n_trials)),
                buffer_sizes=[200], data_args={"seq-synth": CIFAR_LIKE})))
            shares = {}
            if share == "by memory":   # the launcher's default (orchestrator/packing.py)
                shares = packing.pack(trials, info.local_gpus, opts.usage_threshold).shares
                share = min(shares.values())
            with open(os.devnull, "w") as quiet:
                out = run_sweep(trials, SweepDir(tmp, f"pack{share}{'m' * bool(shares)}"),
                                RunOptions(cpus_per_trial=1, gpus_per_trial=share, gpu_shares=shares,
                                           gpu_pool=gpu_pool(info, opts, share, say=print)),
                                board_stream=quiet)
            seen = [out.last_results[t.trial_id].get("cuda_visible_devices", "") for t in trials]
            on_one_gpu = all(s and "," not in s for s in seen)
            print(f"  {share:g} GPU per trial{' (by memory)' * bool(shares)}: {len(out.finished)}/{n_trials} finished in {out.makespan_s:.1f} s "
                  f"({60 * len(out.finished) / max(out.makespan_s, 1e-9):.1f} trials/min); every trial on its own "
                  f"GPU: {'yes' if on_one_gpu else 'NO: ' + repr(seen)}", flush=True)


def resume_on_another_gpu(tmp: Path) -> None:
    if torch.cuda.device_count() < 2:
        print(f"  skipped: {torch.cuda.device_count()} GPU visible, 2 needed")
        return

    def cut(event):
        if isinstance(event, TaskEnd) and event.task == 0:
            raise Cut()

    first = cfg("tbbn", "cuda:0", seed=2)
    try:
        run_trial(first, tmp / "moved", progress=cut)
    except Cut:
        pass
    result = run_trial(first.replace(device="cuda:1"), tmp / "moved")
    print(f"  cut on cuda:0 after task 1, resumed on {result['device']}: {len(result['acc_matrix']['class_il'])} "
          f"tasks, class-IL FAA {result['metrics']['class_il']['faa']:.2f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--trials", type=int, default=8, help="trials per packing level")
    args = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(host_line())
    why_not = None if device == "cuda" else f"--device {args.device}" + ("" if args.device == "cpu" else ": no CUDA")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("1. steps/s, DER++ online, ResNet-18, 32x32:")
        steps_per_s(device, tmp)
        for title, check in (("2. host syncs per step:", lambda: host_syncs(tmp)),
                             ("3-4. placement and packing:", lambda: placement_and_packing(args.trials, tmp)),
                             ("5. resume on another GPU:", lambda: resume_on_another_gpu(tmp))):
            print(title)
            if why_not:
                print(f"  skipped: {why_not}")
            else:
                check()
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
