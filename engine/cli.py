"""`python -m engine ...`: run one trial and write its result.json; the path is printed last.

Exit status: 0 finished, 1 failed during training (task and step named), 2 bad input,
130 interrupted (the last task-boundary checkpoint is kept: run the same command to continue).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from engine.config import TrialConfig, option_of
from engine.errors import ConfigError, TrainingError
from engine.events import Event, TaskEnd
from engine.options import parse_kv
from engine.results import RESULT_FILE


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the bad value, plus where the usage is: a
    ConfigError, which every entry point turns into exit status 2 (not 20 lines of usage)."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see {self.prog} --help)")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # "(default: None)" says nothing: the help text explains
        return action.help if action.default is None else super()._get_help_string(action)


def options_epilog() -> str:
    """Every pluggable part's options, so --help documents --norm_args/--method_args/--data_args."""
    from engine import datasets, methods, norms
    from engine.options import describe

    lines = ["norm options (--norm_args):"]
    lines += [f"  {n}: {describe(norms.REGISTRY.get(n).options)}" for n in norms.REGISTRY.names()]
    lines.append("method options (--method_args):")
    lines += [f"  {n}: {describe(methods.REGISTRY.get(n).OPTIONS)}" for n in methods.REGISTRY.names()]
    lines.append("dataset options (--data_args):")
    lines += [f"  {n}: {describe(datasets.REGISTRY.get(n).options)}" for n in datasets.REGISTRY.names()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrialConfig field, from the field itself (engine/config.py: default, help, type),
    plus --threads and --out."""
    from engine import backbones, buffers, datasets, methods, norms

    registries = {"dataset": datasets, "method": methods, "norm": norms, "buffer_mode": buffers,
                  "backbone": backbones}
    p = OneLineParser(prog="python -m engine", description=__doc__, epilog=options_epilog(),
                      formatter_class=_Formatter)
    for f in dataclasses.fields(TrialConfig):
        flag = {k: v for k, v in f.metadata["flag"].items() if k != "option"}
        help_text = f.metadata["help"]
        if "registry" in flag:
            help_text += f"; one of: {', '.join(registries[flag.pop('registry')].REGISTRY.names())}"
        # unset option dicts and switches stay None: TrialConfig's own defaults and best_args fill them
        default = None if f.default is dataclasses.MISSING or flag.get("action") else f.default
        p.add_argument(option_of(f.name), dest=f.name, default=default, help=help_text, **flag)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core); the "
                                                "sweep sets --cpus_per_trial, and CPU results depend on it")
    p.add_argument("--out", type=Path, help="trial directory (default: results/engine/<trial id>)")
    return p


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    raw = {k: v for k, v in vars(args).items() if k not in ("out", "threads") and v is not None}
    for name in ("norm_args", "method_args", "data_args"):
        raw[name] = parse_kv(raw.get(name, ""), f"--{name}")
    return TrialConfig.from_dict(raw)


def print_progress(event: Event) -> None:
    if isinstance(event, TaskEnd):
        print(event.line(), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from engine.trainer import run_trial

    try:
        args = build_parser().parse_args(argv)
        if args.threads is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads must be >= 1, got {args.threads}")
            import torch
            torch.set_num_threads(args.threads)
        cfg = config_from_args(args).resolved()
        out = args.out or Path("results") / "engine" / cfg.trial_id()
        result = run_trial(cfg, out, print_progress)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command to continue from the last finished task", file=sys.stderr)
        return 130
    m = result["metrics"]
    print(f"class-IL faa {m['class_il']['faa']:.2f}  task-IL faa {m['task_il']['faa']:.2f}", file=sys.stderr)
    print(Path(out) / RESULT_FILE)
    return 0
