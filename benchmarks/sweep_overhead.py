"""Orchestration overhead per trial: 24 tiny trials on 2 CPUs through the real runner.

    python benchmarks/sweep_overhead.py [--trials 24] [--cpus 2] [--variants default wandb no_reuse]

ideal     = (sum of the trials' compute when run back to back in one warm process) / concurrency
makespan  = first trial submitted -> last trial finished, through Ray Tune (Ray already started)
overhead  = (makespan - ideal) / trials
For comparison, AdaB2N's run.py spends at least --coldsecs (15 s) per trial launch plus a fresh
interpreter per trial (measured here as `python -m engine` for the same tiny trial).
Results go to benchmarks/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import sweep  # noqa: E402

TINY = {"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}}
VARIANTS = {  # name -> RunOptions overrides
    "default": {},                                   # the launcher's defaults, --nowandb
    "wandb": {"wandb_mode": "offline"},              # + one offline W&B run per trial
    "no_tune_ckpt": {"tune_checkpoints": False},     # metrics only: no checkpoint copy into Tune
    "no_reuse": {"reuse_actors": False},             # a fresh trial process per trial
}


def plan(n: int):
    return sweep.expand(sweep.spec_from_flags(dict(
        datasets=["seq-synth"], models=["sgd"], methods=["bn"], seeds=list(range(n)), buffer_sizes=[20],
        data_args=TINY)))


def ideal_compute_s(trials) -> float:
    """Sum of per-trial compute (dataset + model build + training + eval), one warm process."""
    import torch
    from engine.trainer import run_trial

    torch.set_num_threads(1)  # as each trial gets 1 CPU under Ray
    run_trial(trials[0].config, tempfile.mkdtemp())  # warm-up: first-call costs are not per trial
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            t0 = time.perf_counter()
            run_trial(t.config, Path(tmp) / t.trial_id)
            total += time.perf_counter() - t0
    return total


def fresh_interpreter_s(trial, repeats: int = 3) -> float:
    """What run.py pays per trial besides --coldsecs: `python -m engine` (import + run)."""
    cfg = trial.config
    cmd = [sys.executable, "-m", "engine", "--dataset", cfg.dataset, "--model", cfg.model, "--norm", cfg.norm,
           "--buffer_size", str(cfg.buffer_size), "--device", "cpu",
           "--data_args", ",".join(f"{k}={v}" for k, v in TINY["seq-synth"].items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    times = []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([*cmd, "--seed", str(100 + i), "--out", tmp], cwd=ROOT, env=env, check=True,
                           capture_output=True)
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def worker_rss(last_results: dict[str, dict]) -> str:
    """Per trial process: RSS after its 5th trial, after its last, and the growth per trial between."""
    by_pid: dict[int, list[float]] = {}
    for r in last_results.values():  # trials finish in order per process; sort by trial end time
        by_pid.setdefault(r["pid"], []).append((r["timestamp"], r["worker_rss_mib"]))
    parts = []
    for pid, rows in sorted(by_pid.items()):
        rss = [v for _, v in sorted(rows)]
        base = rss[min(4, len(rss) - 1)]
        growth = (rss[-1] - base) / max(1, len(rss) - 1 - min(4, len(rss) - 1))
        parts.append(f"pid {pid}: {len(rss)} trials, {base:.0f} -> {rss[-1]:.0f} MiB "
                     f"(peak {max(rss):.0f}), {growth * 1024:+.0f} KiB per trial")
    return "; ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()

    trials = plan(args.trials)
    compute = ideal_compute_s(trials)
    ideal = compute / args.cpus
    per_trial_engine = compute / len(trials)
    interp = fresh_interpreter_s(trials[0])
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; {len(trials)} trials, {args.cpus} at a time")
    print(f"compute per trial (warm, in-process): {per_trial_engine:.2f} s; ideal makespan {ideal:.1f} s")
    print(f"`python -m engine` per trial (fresh interpreter): {interp:.2f} s "
          f"-> run.py >= 15 s coldsecs + {interp - per_trial_engine:.1f} s start-up per trial")

    from orchestrator.cluster import ClusterOptions, session
    from orchestrator.ledger import SweepDir
    from orchestrator.runner import RunOptions, run_sweep

    t0 = time.perf_counter()
    with session(ClusterOptions(num_cpus=args.cpus, want_gpus=False), say=lambda s: None):
        startup = time.perf_counter() - t0
        print(f"Ray start-up (local, with dashboard): {startup:.1f} s, once per launch")
        rss_lines = []
        print("| variant | makespan (s) | ideal (s) | overhead per trial (s) |")
        print("|---|---|---|---|")
        for name in args.variants:
            with tempfile.TemporaryDirectory() as tmp:
                out = run_sweep(trials, SweepDir(tmp, name),
                                RunOptions(cpus_per_trial=1, gpus_per_trial=0, progress_every_s=1e9,
                                           **VARIANTS[name]), board_stream=open(os.devnull, "w"))
                assert len(out.finished) == len(trials), out.failed
                overhead = (out.makespan_s - ideal) / len(trials)
                print(f"| {name} | {out.makespan_s:.1f} | {ideal:.1f} | {overhead:.2f} |", flush=True)
                rss_lines.append(f"{name}: " + worker_rss(out.last_results))
        print("trial-process resident memory (MiB, at each trial's end), per reused process:")
        print("\n".join(rss_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
