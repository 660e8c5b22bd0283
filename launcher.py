"""Run a grid of continual-learning trials on Ray Tune: `python launcher.py --num_seeds 3 --methods tbbn adab2n`.

Replaces AdaB2N's run.py and keeps its flags. The grid is seed x dataset x layer (--methods) x
model x buffer size x each layer's hyper-grid. Before Ray starts, every trial is checked: each
distinct network is built once without data (pre-flight) and every dataset is made ready once
under --data_root (downloaded when missing and downloadable; trials never download). Only then
the grid is printed with what is already done, and starts after `Confirm? (y/n)` (or --yes).
Re-running the same command (same --name) runs only the trials without a finished result.json.
Exit status: 0 all trials finished, 1 some failed
(listed with their log files), 2 bad input, 130 interrupted (run the same command to continue).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S = argparse.SUPPRESS  # unset flags stay absent, so a preset (--config) can fill them


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import OneLineParser
    from orchestrator.flag_types import (FRACTION, NONNEGATIVE, NONNEGATIVE_INT, PORT, POSITIVE,
                                         POSITIVE_INT)

    p = OneLineParser(prog="python launcher.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run.py's flags (same names and meaning)")
    g.add_argument("--interpreter", default=S, help="Python to run under; the launcher re-executes itself "
                                                    "with it when it differs (default: this one)")
    g.add_argument("--coldsecs", type=NONNEGATIVE, default=S, help="minimum seconds between two trial starts "
                                                             "(default 0: Ray places trials; run.py: 15)")
    g.add_argument("--waitsecs", type=POSITIVE, default=S, help="seconds between GPU probes during the sweep: "
                                                             "a GPU others make busy gets no new trials (default 25)")
    g.add_argument("--usage_threshold", type=FRACTION, default=S, help="a GPU is idle when the memory fraction others "
                                                                    "use and its utilization are below this (default 0.3)")
    g.add_argument("--logdir", default=S, help="one log file per trial, named after its run "
                                               "(default: <results_dir>/<name>/_logs)")
    # run.py's names: --models are the CL methods and --methods the normalization layers; the
    # sweep maps them once (sweep.spec_from_flags) to `methods` and `norms`, the code's names
    g.add_argument("--models", nargs="+", default=S, help="CL methods (default: derpp er_ace)")
    g.add_argument("--num_seeds", type=POSITIVE_INT, default=S, help="seeds 0..N-1 (default 3)")
    g.add_argument("--bs", type=POSITIVE_INT, default=S, help="batch size (default: the setting's, online 10)")
    g.add_argument("--epochs", type=POSITIVE_INT, default=S, help="epochs per task (default: the setting's, online 1)")
    g.add_argument("--datasets", nargs="+", default=S,
                   help="datasets (default: seq-cifar10 seq-cifar100 seq-miniimg)")
    g.add_argument("--methods", nargs="+", default=S, help="normalization layers replacing BN "
                                                           "(default: BN LN IN GN CN AdaB2N)")
    g.add_argument("--buffer_mode", default=S, help="replay buffer: reservoir (default), ring, herding")
    g.add_argument("--nowandb", action="store_true", default=S, help="no W&B logging")
    g.add_argument("--wandb_project", default=S, help="W&B project prefix: <project>_<dataset> (default CL)")

    o = p.add_argument_group("ours")
    o.add_argument("--config", default=S, help="a preset from configs/sweeps/ (name or path); flags given "
                                               "here override it")
    o.add_argument("--name", default=S, help="the sweep; re-using a name resumes it (default: the preset's "
                                             "name, else 'sweep')")
    o.add_argument("--results_dir", default=S, help="where sweeps live (default: results)")
    o.add_argument("--setting", default=S, help="online (default) or offline")
    o.add_argument("--seeds", type=NONNEGATIVE_INT, nargs="+", default=S, help="explicit seeds (instead of --num_seeds)")
    o.add_argument("--buffer_sizes", type=NONNEGATIVE_INT, nargs="+", default=S,
                   help="buffer sizes for every dataset (default: run.py's per dataset)")
    o.add_argument("--norm_grid", nargs="+", default=S, metavar="LAYER:K=V|V,...",
                   help="a layer's hyper-grid, replacing its default; e.g. adab2n:kappa=0.4,lambd=0.1,ada_t0=1 "
                        "(one point) or adab2n:kappa=0.1|0.4 (two); 'adab2n:' = its defaults")
    o.add_argument("--data_args", nargs="+", default=S, metavar="[DATASET:]K=V,...",
                   help="dataset options, e.g. seq-synth:image_size=8,train_per_class=8; without DATASET: "
                        "to every dataset of the grid that takes them (download=false: CIFAR)")
    o.add_argument("--trial_args", nargs="+", default=S, metavar="K=V|V,...",
                   help="other trial fields for every trial, '|' sweeps them, e.g. lr=0.03|0.1 n_tasks=5")
    o.add_argument("--data_root", default=S, help="where on-disk datasets live; the launcher makes them "
                                                "ready there before Ray starts (default: data)")
    o.add_argument("--precision", default=S, metavar="fp32|bf16",
                   help="bf16: every trial's training forward and loss under bf16 autocast (norm statistics, "
                        "parameters and optimizer stay fp32); fast on GPUs and AMX/AVX-512-BF16 CPUs, slower "
                        "on other CPUs (the launcher says so and asks); part of the trial id (default fp32)")
    o.add_argument("--deterministic", action="store_true", default=S,
                   help="deterministic cuDNN and torch kernels where they exist (slower on GPUs; TF32 is "
                        "always off); part of the trial id; CPU runs are reproducible without it")
    o.add_argument("--gpus_per_trial", type=NONNEGATIVE, default=S,
                   help="GPUs per trial; fractional packs trials on a GPU, e.g. 0.25 (default with local GPUs: "
                        "as many per GPU as fit under --usage_threshold of its memory, by estimate; 1 on a "
                        "joined cluster; 0 without GPUs)")
    o.add_argument("--cpus_per_trial", type=POSITIVE, default=S, help="CPUs per trial (default 1)")
    o.add_argument("--max_failures", type=NONNEGATIVE_INT, default=S, help="retries of a crashed trial (default 2); "
                                                               "a non-finite loss is never retried")
    o.add_argument("--fail_fast", type=NONNEGATIVE_INT, default=S,
                   help="stop the sweep once this many trials failed with the same config, data or code "
                        "error (not a crash, an out-of-memory or a non-finite loss); 0: never (default 3)")
    o.add_argument("--address", default=S, help="join this Ray cluster (host:port or auto) instead of "
                                                "starting one; --results_dir must be on shared storage")
    o.add_argument("--dashboard_port", type=PORT, default=S, help="local dashboard port (default 8265 or the "
                                                                  "next free one)")
    o.add_argument("--dry_run", action="store_true", default=False,
                   help="check every trial (pre-flight), print the grid and exit; the data are not touched")
    o.add_argument("--prepare_data", action="store_true", default=False,
                   help="only the data stage: make every dataset of the grid ready under --data_root "
                        "(download what is missing and downloadable, check what is there), then exit")
    o.add_argument("--report_only", action="store_true", default=False,
                   help="aggregate the sweep --name into tables and plots, run nothing")
    o.add_argument("--baseline", metavar="LAYER", default=S,
                   help="the layer the report's paired tables compare every other layer to (default bn)")
    o.add_argument("--yes", action="store_true", default=False, help="start without asking")
    return p


RUN_DEFAULTS = {"results_dir": "results", "coldsecs": 0.0, "waitsecs": 25.0, "usage_threshold": 0.3,
                "logdir": None, "gpus_per_trial": None, "cpus_per_trial": 1.0, "max_failures": 2,
                "fail_fast": 3, "nowandb": False, "wandb_project": "CL", "address": None, "dashboard_port": None,
                "baseline": None}


def maybe_reexec(interpreter: str | None, argv: list[str]) -> None:
    """run.py's --interpreter: run the launcher under that Python (once; no loop)."""
    if not interpreter or os.environ.get("NORMSWEEP_REEXEC"):
        return
    target = shutil.which(interpreter) or interpreter
    if os.path.realpath(target) == os.path.realpath(sys.executable):
        return
    if not os.access(target, os.X_OK):
        print(f"error: --interpreter {interpreter!r} is not an executable", file=sys.stderr)
        sys.exit(2)
    os.environ["NORMSWEEP_REEXEC"] = "1"
    os.execv(target, [target, os.path.abspath(__file__), *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from engine.errors import ConfigError

    try:
        parser = build_parser()
        args = vars(parser.parse_args(argv))
        maybe_reexec(args.pop("interpreter", None), argv)
        dry_run, yes, report_only, prepare_data = (args.pop(m) for m in ("dry_run", "yes", "report_only",
                                                                         "prepare_data"))
        plan = _plan(parser, args, report_only=report_only)
        if report_only:
            return _report_only(plan.sweep_dir.root, plan.run["baseline"])
        return _run(plan, dry_run=dry_run, yes=yes, prepare_data=prepare_data)
    except ConfigError as exc:  # bad input: one line, exit 2, before Ray and before the grid
        print(f"error: {exc}", file=sys.stderr)
        return 2


@dataclass
class Plan:
    spec: Any
    sweep_dir: Any
    run: dict
    trials: list
    done: list
    pending: list


def _plan(parser: argparse.ArgumentParser, args: dict, report_only: bool = False) -> Plan:
    """Flags (defaults < preset < command line) -> the checked grid; nothing is written."""
    from engine.errors import ConfigError
    from orchestrator import sweep
    from orchestrator.flag_types import check_preset
    from orchestrator.dashboard import in_ray_job
    from orchestrator.ledger import SweepDir

    preset = {}
    if "config" in args:
        preset = check_preset(parser, sweep.load_preset(args["config"]), f"--config {args['config']}")
    flags = {**RUN_DEFAULTS, **preset, **args}
    flags.setdefault("name", Path(args["config"]).stem if "config" in args else "sweep")
    flags["data_root"] = str(Path(flags.get("data_root", "data")).expanduser().resolve())
    run = {k: flags[k] for k in RUN_DEFAULTS}
    if in_ray_job() and not Path(str(run["results_dir"])).expanduser().is_absolute():
        raise ConfigError(f"--results_dir {run['results_dir']!r} inside a Ray job: give an absolute path every "
                          "node sees (a relative one would land in the job's temporary copy of the checkout)")
    spec = sweep.spec_from_flags({k: v for k, v in flags.items() if k in sweep.DEFAULTS})
    sweep_dir = SweepDir(flags["results_dir"], str(flags["name"]))
    if report_only:
        return Plan(spec, sweep_dir, run, [], [], [])
    if run["address"]:
        from orchestrator.cluster import check_address
        check_address(run["address"])
    trials = sweep.expand(spec)
    layers = sorted({t.config.norm for t in trials})
    if run["baseline"] and run["baseline"].lower() not in layers:  # else the report fails at the end
        raise ConfigError(f"--baseline {run['baseline']!r} is not among --methods: {', '.join(layers)}")
    done = [t for t in trials if sweep_dir.is_done(t.trial_id)]
    finished = {t.trial_id for t in done}
    return Plan(spec, sweep_dir, run, trials, done, [t for t in trials if t.trial_id not in finished])


def _run(plan: Plan, *, dry_run: bool, yes: bool, prepare_data: bool) -> int:
    from orchestrator import sweep
    from orchestrator.data_stage import prepare_data as data_stage
    from orchestrator.preflight import check_builds

    pending = plan.pending
    if prepare_data:
        print("\n".join(data_stage(t.config for t in plan.trials)))
        return 0
    check_builds(t.config for t in pending)   # what the engine would refuse, once per cause
    slow = _slow_bf16_note(plan)
    if not dry_run and pending:
        data_stage(t.config for t in pending)
        plan.sweep_dir.check_writable()
        if not yes:
            _require_terminal()
    print(f"Sweep '{plan.sweep_dir.name}' in {plan.sweep_dir.root}")
    print("\n".join(sweep.summarize_grid(plan.spec, plan.trials)))
    print(f"  {len(plan.done)} already finished, {len(pending)} to run")
    if slow:
        print(slow)
    if dry_run:
        print("\n".join(_gpu_plan(plan)))
        for t in pending[:50]:
            print(f"    {t.trial_id}  {t.run_name}")
        if len(pending) > 50:
            print(f"    ... and {len(pending) - 50} more")
        return 0
    if not pending:
        print("Nothing to run: every trial of this grid has finished.")
        plan.sweep_dir.prune_tune_checkpoints()  # what a killed launch left behind
        _report(plan.sweep_dir.root, plan.run["baseline"])
        return 0
    if not yes and not _confirm():
        print("Not started.")
        return 0
    plan.sweep_dir.root.mkdir(parents=True, exist_ok=True)  # the first write, once confirmed
    return _launch(pending, len(plan.done), plan.sweep_dir, plan.run)


def _slow_bf16_note(plan: Plan) -> str | None:
    """One line when bf16 trials would run on this CPU without bf16 hardware (slower than fp32).
    GPUs are judged when Ray has them; here only the CPU the local trials would use."""
    if plan.spec.precision != "bf16" or plan.run["address"] or plan.run["gpus_per_trial"] not in (None, 0):
        return None
    import torch

    from engine.device import fast_bf16
    from orchestrator import gpus

    if plan.run["gpus_per_trial"] is None and gpus.probe(os.environ.get("CUDA_VISIBLE_DEVICES")).gpus:
        return None
    if fast_bf16(torch.device("cpu")):
        return None
    return ("note: --precision bf16 on this CPU (no AMX or AVX-512-BF16) is slower than fp32, not faster; "
            "it still gives bf16 numerics")


def _gpu_plan(plan: Plan) -> list[str]:
    """--dry_run: where the trials would run, read from NVML now (no Ray is started)."""
    from orchestrator import gpus, packing

    if plan.run["address"]:
        return ["GPU plan: on the cluster at --address, Ray's GPU count decides "
                "(--gpus_per_trial; default 1 per trial there)"]
    reading = gpus.probe(os.environ.get("CUDA_VISIBLE_DEVICES")) if plan.run["gpus_per_trial"] != 0 else None
    return packing.plan_lines(plan.pending, reading, plan.run["usage_threshold"], plan.run["gpus_per_trial"])


def _require_terminal() -> None:
    from engine.errors import ConfigError

    if not sys.stdin or not sys.stdin.isatty():
        raise ConfigError("stdin is not a terminal, so nobody can confirm: pass --yes to start "
                          "(or --dry_run to only print the grid)")


def _confirm() -> bool:
    print("Confirm? (y/n) ", end="", flush=True)
    try:
        return input().strip().lower() == "y"
    except EOFError:
        return False


def _launch(pending, n_done: int, sweep_dir, run: dict) -> int:
    from engine.errors import ConfigError
    from orchestrator import cluster, packing, runner, tracking
    from orchestrator.dashboard import in_ray_job

    wandb_mode, wandb_note = tracking.choose_mode(run["nowandb"])
    opts = cluster.ClusterOptions(address=run["address"], usage_threshold=run["usage_threshold"],
                                  waitsecs=run["waitsecs"], want_gpus=run["gpus_per_trial"] != 0,
                                  dashboard_port=run["dashboard_port"], sweep_name=sweep_dir.name)
    try:
        with cluster.session(opts, say=print) as info:
            gpus_per_trial, note = cluster.fit_trial_resources(info, run["cpus_per_trial"], run["gpus_per_trial"])
            # (a local start has already said why there is no GPU)
            for line in info.notes + ([note] if note and not info.notes else []) + cluster.dashboard_lines(info):
                print(line)
            if run["address"] or in_ray_job():
                cluster.check_shared_storage(sweep_dir.root)
            if wandb_note:
                print(wandb_note)
            if wandb_mode == "offline":
                print(tracking.sync_hint(sweep_dir.wandb))
            packed = packing.Packing()
            if run["gpus_per_trial"] is None and info.local_gpus:   # default: pack by memory
                packed = packing.pack(pending, info.local_gpus, opts.usage_threshold)
                print("\n".join(packed.lines))
            shares = sorted(set(packed.shares.values())) or [gpus_per_trial]
            each = f"{shares[0]:g}" if len(shares) == 1 else f"{shares[0]:g} to {shares[-1]:g}"
            print(f"Running {len(pending)} trials ({run['cpus_per_trial']:g} CPU, {each} GPU each; "
                  f"{info.nodes} node(s)); logs in {Path(runner.log_file_for(pending[0], sweep_dir, run['logdir'])).parent}")
            pool = cluster.gpu_pool(info, opts, shares[-1], say=print)
            outcome = runner.run_sweep(pending, sweep_dir, runner.RunOptions(
                cpus_per_trial=run["cpus_per_trial"], gpus_per_trial=gpus_per_trial, gpu_pool=pool,
                gpu_shares=packed.shares,
                max_failures=run["max_failures"], fail_fast=run["fail_fast"], coldsecs=run["coldsecs"], logdir=run["logdir"],
                wandb_mode=wandb_mode, wandb_project=run["wandb_project"]), already_done=n_done)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        outcome = runner.SweepOutcome(interrupted=True)
    if outcome.interrupted:
        print("Interrupted. Finished trials are kept; run the same command to continue "
              "(running trials resume from their last finished task).", file=sys.stderr)
        return 130
    _report(sweep_dir.root, run["baseline"])
    if outcome.stopped:
        s = outcome.stopped
        print(f"Stopped: {s.count} trials failed with the same error: {s.error}\n  log: {s.log_file}\n"
              f"  {outcome.not_started} trials not run; fix the cause and run the same command to run "
              f"them (--fail_fast 0 never stops).", file=sys.stderr)
        return 1
    if outcome.failed:
        print(f"{len(outcome.failed)} of {len(pending)} trials failed:", file=sys.stderr)
        for f in outcome.failed:
            print(f"  {f.run_name}: {f.error}\n    log: {f.log_file}", file=sys.stderr)
        return 1
    print(f"All {len(pending) + n_done} trials finished.")
    return 0


def _report_only(sweep_root: Path, baseline: str | None) -> int:
    from orchestrator.report import ReportError, show

    try:
        show(sweep_root, baseline=baseline)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _report(sweep_root: Path, baseline: str | None) -> None:
    """Aggregate with orchestrator.report (tables, plots) and print where they are."""
    from orchestrator.report import show

    try:
        show(sweep_root, baseline=baseline)
    except ValueError as exc:  # ReportError: e.g. no finished trial yet
        print(f"report: {exc}")
    except Exception as exc:  # a report bug must not hide the sweep's own outcome
        print(f"report failed ({type(exc).__name__}: {exc}); results are in {sweep_root}", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C at the prompt or while waiting for a GPU
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)
