"""Run a grid of continual-learning trials on Ray Tune: `python launcher.py --num_seeds 3 --methods tbbn adab2n`.

Replaces AdaB2N's run.py and keeps its flags. The grid is seed x dataset x layer (--methods) x
CL method (--models) x buffer size x each layer's hyper-grid. Before Ray starts, every trial is checked: each
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

def build_parser() -> argparse.ArgumentParser:
    """Every flag comes from its one declaration in orchestrator/flags.py."""
    from engine.cli import OneLineParser
    from orchestrator import flags

    p = OneLineParser(prog="python launcher.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_to(p)
    return p


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
    from orchestrator.flags import COMMANDS

    try:
        parser = build_parser()
        args = vars(parser.parse_args(argv))
        command = {name: args.pop(name) for name in COMMANDS}
        maybe_reexec(command["interpreter"], argv)
        plan = _plan(parser, args, command["config"], report_only=command["report_only"])
        report_only, dry_run, yes, prepare_data = (command[k] for k in ("report_only", "dry_run", "yes",
                                                                         "prepare_data"))
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


def _plan(parser: argparse.ArgumentParser, args: dict, config: str | None, report_only: bool = False) -> Plan:
    """Flags (defaults < preset < command line) -> the checked grid; nothing is written."""
    from engine.errors import ConfigError
    from orchestrator import sweep
    from orchestrator.flag_types import check_preset
    from orchestrator.flags import defaults
    from orchestrator.dashboard import in_ray_job
    from orchestrator.ledger import SweepDir

    preset = check_preset(parser, sweep.load_preset(config), f"--config {config}") if config else {}
    run_defaults = defaults("run")
    flags = {**run_defaults, **preset, **args}
    flags["name"] = flags["name"] or (Path(config).stem if config else "sweep")
    flags["data_root"] = str(Path(flags.get("data_root", "data")).expanduser().resolve())
    run = {k: flags[k] for k in run_defaults}
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
                gpu_shares=packed.shares, process_per_trial=run["process_per_trial"],
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
