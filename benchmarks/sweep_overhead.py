"""Orchestration overhead per trial: tiny trials on 2 CPUs through the real runner.

    python benchmarks/sweep_overhead.py [--trials 24] [--cpus 2] [--variants default wandb no_reuse]
    python benchmarks/sweep_overhead.py --trials 5000 --variants default     # issue 20's scale check

ideal     = (sum of the trials' compute when run back to back in one warm process) / concurrency
makespan  = first trial submitted -> last trial finished, through Ray Tune (Ray already started)
overhead  = (makespan - ideal) / trials
For comparison, AdaB2N's run.py spends at least --coldsecs (15 s) per trial launch plus a fresh
interpreter per trial (measured here as `python -m engine` for the same tiny trial).
Results go to benchmarks/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import sweep  # noqa: E402

TINY = {"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}}
VARIANTS = {  # name -> RunOptions overrides
    "default": {},                                   # the launcher's defaults, --nowandb
    "wandb": {"wandb_mode": "offline"},              # + one offline W&B run per trial
    "no_reuse": {"process_per_trial": True},         # a fresh trial process per trial
}


@contextlib.contextmanager
def simulated_cluster(nodes: int, cpus: int):
    """nodes > 1: a head without CPUs (the launcher's) and `nodes` worker nodes sharing `cpus`,
    each its own raylet, as `ray start --address` on other machines would give; then ray.init
    joins it and the runner uses it as it is."""
    if nodes <= 1:
        yield
        return
    import ray
    from ray.cluster_utils import Cluster
    from orchestrator.cluster import REPO_ROOT, WORKER_ENV

    if cpus % nodes:
        raise SystemExit(f"--cpus {cpus} does not split evenly over --nodes {nodes}")
    os.environ.update(WORKER_ENV)   # the raylets (and so the trial processes) inherit them
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus // nodes)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()


def plan(n: int):
    return sweep.expand(sweep.spec_from_flags(dict(
        datasets=["seq-synth"], models=["sgd"], methods=["bn"], seeds=list(range(n)), buffer_sizes=[20],
        data_args=TINY)))


def ideal_compute_s(trials, sample: int) -> float:
    """Sum of per-trial compute (dataset + model build + training + eval), one warm process;
    measured on `sample` of them, evenly spread, and scaled (the trials differ by seed only)."""
    import torch
    from engine.trainer import run_trial

    torch.set_num_threads(1)  # as each trial gets 1 CPU under Ray
    run_trial(trials[0].config, tempfile.mkdtemp())  # warm-up: first-call costs are not per trial
    picked = trials[:: max(1, len(trials) // sample)][:sample]
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for t in picked:
            t0 = time.perf_counter()
            run_trial(t.config, Path(tmp) / t.trial_id)
            total += time.perf_counter() - t0
    return total / len(picked) * len(trials)


def fresh_interpreter_s(trial, repeats: int = 3) -> float:
    """What run.py pays per trial besides --coldsecs: `python -m engine` (import + run)."""
    cfg = trial.config
    cmd = [sys.executable, "-m", "engine", "--dataset", cfg.dataset, "--model", cfg.method, "--norm", cfg.norm,
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


class RssSampler:
    """This process's (the launcher's) resident memory, sampled every `every_s` in a thread."""

    def __init__(self, every_s: float = 0.5):
        self.samples: list[tuple[float, float]] = []   # (time.time(), MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    @staticmethod
    def rss_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append((time.time(), self.rss_mib()))

    def __enter__(self):
        self.samples.append((time.time(), self.rss_mib()))
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> float:
        """RSS at the last sample before t (the first sample if none)."""
        before = [m for s, m in self.samples if s <= t]
        return before[-1] if before else self.samples[0][1]


def scale_lines(last_results: dict[str, dict], rss: RssSampler, window: int = 500) -> list[str]:
    """Marginal rate of the first and last `window` trials to finish, and the launcher's memory
    over the sweep: a cost per trial that grows with the sweep shows as a falling rate."""
    ends = sorted(r["timestamp"] for r in last_results.values())
    n = len(ends)
    w = min(window, n // 2)
    lines = []
    if w >= 2:
        first = (w - 1) / max(ends[w - 1] - ends[0], 1e-9) * 60
        last = (w - 1) / max(ends[-1] - ends[n - w], 1e-9) * 60
        lines.append(f"marginal rate: first {w} trials {first:.0f}/min, last {w} trials {last:.0f}/min "
                     f"(first/last {first / last:.2f}x)")
    start, peak, end = rss.samples[0][1], max(m for _, m in rss.samples), rss.samples[-1][1]
    line = f"launcher RSS: {start:.0f} MiB before the sweep, peak {peak:.0f} MiB, {end:.0f} MiB at its end"
    if w >= 2 and n > w:
        grow = (rss.at(ends[-1]) - rss.at(ends[w - 1])) / (n - w)
        line += f"; {grow * 1024:+.1f} KiB per trial after the first {w}"
    return lines + [line]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--cpus", type=int, default=2, help="trials at a time (and the ideal's divisor)")
    p.add_argument("--nodes", type=int, default=1,
                   help="> 1: a simulated cluster (ray.cluster_utils.Cluster) of this many nodes on this "
                        "machine, --cpus split between them, the launcher's head node without CPUs")
    p.add_argument("--ideal_sample", type=int, default=48, help="trials timed in-process for the ideal")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()

    trials = plan(args.trials)
    # In a child process: the torch and trial memory of the in-process runs must not count as
    # the launcher's (this process plays the launcher below).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        compute = pool.apply(ideal_compute_s, (trials, args.ideal_sample))
    ideal = compute / min(args.cpus, os.cpu_count())   # more declared CPUs than cores share them
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
    with simulated_cluster(args.nodes, args.cpus), \
            session(ClusterOptions(num_cpus=args.cpus, want_gpus=False), say=lambda s: None):
        startup = time.perf_counter() - t0
        where = f"{args.nodes} simulated nodes" if args.nodes > 1 else "local, with dashboard"
        print(f"Ray start-up ({where}): {startup:.1f} s, once per launch")
        rss_lines = []
        print("| variant | makespan (s) | ideal (s) | overhead per trial (s) |")
        print("|---|---|---|---|")
        for name in args.variants:
            with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as quiet, RssSampler() as rss:
                out = run_sweep(trials, SweepDir(tmp, name),
                                RunOptions(cpus_per_trial=1, gpus_per_trial=0, progress_every_s=1e9,
                                           **VARIANTS[name]), board_stream=quiet)
            assert len(out.finished) == len(trials), out.failed
            overhead = (out.makespan_s - ideal) / len(trials)
            print(f"| {name} | {out.makespan_s:.1f} | {ideal:.1f} | {overhead:.2f} |", flush=True)
            rss_lines += [f"{name}: {line}" for line in scale_lines(out.last_results, rss)]
            rss_lines.append(f"{name}: " + worker_rss(out.last_results))
            per_node = Counter(r["node_id"][:8] for r in out.last_results.values())
            rss_lines.append(f"{name}: trials per node: " + ", ".join(f"{n} {c}" for n, c in sorted(per_node.items())))
        print("launcher (this process) and trial-process resident memory (MiB, at each trial's end):")
        print("\n".join(rss_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
