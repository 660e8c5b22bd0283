"""`python -m engine ...`: run one trial and write its result.json; the path is printed last.

Exit status: 0 finished, 1 failed during training (task and step named), 2 bad input,
130 interrupted (the last task-boundary checkpoint is kept: run the same command to continue).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from engine.config import PRECISIONS, SETTINGS, TrialConfig
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


# every flag's default is its TrialConfig field's (None: resolved per setting, dataset and method)
FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig) if f.default is not dataclasses.MISSING}


def build_parser() -> argparse.ArgumentParser:
    from engine import backbones, buffers, datasets, methods, norms

    d = FIELD_DEFAULTS

    p = OneLineParser(prog="python -m engine", description=__doc__, epilog=options_epilog(),
                                formatter_class=_Formatter)
    p.add_argument("--dataset", default=d["dataset"], help=f"one of: {', '.join(datasets.REGISTRY.names())}")
    p.add_argument("--model", default=d["model"], help=f"CL method, one of: {', '.join(methods.REGISTRY.names())}")
    p.add_argument("--norm", default=d["norm"], help=f"normalization layer replacing every BatchNorm2d, one of: "
                                                f"{', '.join(norms.REGISTRY.names())} (case-insensitive)")
    p.add_argument("--buffer_mode", default=d["buffer_mode"],
                   help=f"replay buffer, one of: {', '.join(buffers.REGISTRY.names())}")
    p.add_argument("--buffer_size", type=int, default=d["buffer_size"], help="replay buffer capacity (items)")
    p.add_argument("--seed", type=int, default=d["seed"], help="trial seed; seed > 0 also permutes the class order")
    p.add_argument("--setting", default=d["setting"], choices=SETTINGS,
                   help="online: one pass, small batches; offline: many epochs, exemplar memory")
    p.add_argument("--epochs", type=int, help="epochs per task (default: online 1, offline from best_args)")
    p.add_argument("--bs", type=int, help="current-task rows per step (default: online 10, offline 48)")
    p.add_argument("--minibatch_size", type=int, help="replay rows per draw (default: online 10, offline 16)")
    p.add_argument("--lr", type=float, help="learning rate (default: configs/best_args.yaml)")
    p.add_argument("--n_tasks", type=int, help="number of tasks (default: the dataset's standard split)")
    p.add_argument("--nc_first_task", type=int, help="classes in the first task (default: even split)")
    p.add_argument("--backbone", help=f"one of: {', '.join(backbones.REGISTRY.names())} (default: per dataset)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default: 0)")
    p.add_argument("--weight_decay", type=float, help="SGD weight decay (default: online 0, offline 1e-4)")
    p.add_argument("--lr_milestones", type=int, nargs="*", help="offline: epochs at which the LR drops")
    p.add_argument("--lr_gamma", type=float, help="offline: LR factor at each milestone")
    p.add_argument("--selection", choices=("val", "last"), help="offline: keep the best-validation or last epoch")
    p.add_argument("--norm_args", metavar="K=V,...", help="norm-layer options, e.g. kappa=0.4,lambd=0.1")
    p.add_argument("--method_args", metavar="K=V,...", help="method options, e.g. alpha=0.1,beta=0.5")
    p.add_argument("--data_args", metavar="K=V,...", help="dataset options (seq-synth: image_size=32,...)")
    p.add_argument("--data_root", default=d["data_root"], help="where on-disk datasets live")
    p.add_argument("--device", default=d["device"], help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default=d["precision"],
                   help="fp32 or bf16: forward and loss under autocast; norm statistics, parameters and optimizer "
                        "stay fp32")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic cuDNN/torch algorithms on a GPU (slower; TF32 is always off)")
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
