"""Every launcher flag, declared once: its name, default, help, type (with its range) and kind.

From this table come the launcher's parser and --help (`add_to`), the sweep's axes and their
defaults (`defaults("axis")`: orchestrator/sweep/spec.py), the launch's options and theirs
(`defaults("run")`), the keys a preset may set (`PRESET_KEYS`) and the check of a preset's
values (flag_types.check_preset runs them through the same types). Names are run.py's where it
had the flag; `--models` are the CL methods and `--methods` the normalization layers there, and
the sweep maps them once to the code's names (sweep.spec_from_flags).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.flag_types import FRACTION, NONNEGATIVE, NONNEGATIVE_INT, PORT, POSITIVE, POSITIVE_INT

RUNPY, OURS = "run.py's flags (same names and meaning)", "ours"


@dataclass(frozen=True)
class Flag:
    name: str
    default: Any
    help: str                       # "{default}" in it is the default's text; else "(default X)" is added
    kind: str                       # axis (a sweep axis) | run (how the sweep runs) | command (not in presets)
    group: str = OURS
    type: Callable[[Any], Any] | None = None
    nargs: str | None = None
    switch: bool = False            # store_true
    metavar: str | None = None
    preset: bool = True             # a preset (--config) may set it (commands never)

    def shown(self) -> str:
        """The default as --help and the README write it ("derpp er_ace", "25", "0.3")."""
        if isinstance(self.default, (list, tuple)):
            return " ".join(map(str, self.default))
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def help_text(self) -> str:
        if "{default}" in self.help:
            return self.help.replace("{default}", self.shown())
        if self.switch or self.default is None or self.default == {}:
            return self.help
        return f"{self.help} (default {self.shown()})"


FLAGS: tuple[Flag, ...] = (
    # run.py's
    Flag("interpreter", None, "Python to run under; the launcher re-executes itself with it when it differs "
         "(default: this one)", "command", RUNPY),
    Flag("coldsecs", 0.0, "minimum seconds between two trial starts (default {default}: Ray places trials; "
         "run.py: 15)", "run", RUNPY, NONNEGATIVE),
    Flag("waitsecs", 25.0, "seconds between GPU probes during the sweep: a GPU others make busy gets no new "
         "trials", "run", RUNPY, POSITIVE),
    Flag("usage_threshold", 0.3, "a GPU is idle when the memory fraction others use and its utilization are "
         "below this", "run", RUNPY, FRACTION),
    Flag("logdir", None, "one log file per trial, named after its run (default: <results_dir>/<name>/_logs)",
         "run", RUNPY),
    Flag("models", ["derpp", "er_ace"], "CL methods (default: {default})", "axis", RUNPY, nargs="+"),
    Flag("num_seeds", 3, "seeds 0..N-1", "axis", RUNPY, POSITIVE_INT),
    Flag("bs", None, "batch size (default: the setting's, online 10)", "axis", RUNPY, POSITIVE_INT),
    Flag("epochs", None, "epochs per task (default: the setting's, online 1)", "axis", RUNPY, POSITIVE_INT),
    Flag("datasets", ["seq-cifar10", "seq-cifar100", "seq-miniimg"], "datasets (default: {default})", "axis",
         RUNPY, nargs="+"),
    Flag("methods", ["BN", "LN", "IN", "GN", "CN", "AdaB2N"], "normalization layers replacing BN "
         "(default: {default})", "axis", RUNPY, nargs="+"),
    Flag("buffer_mode", "reservoir", "replay buffer: reservoir, ring or herding", "axis", RUNPY),
    Flag("nowandb", False, "no W&B logging", "run", RUNPY, switch=True),
    Flag("wandb_project", "CL", "W&B project prefix: <project>_<dataset>", "run", RUNPY),
    # ours
    Flag("config", None, "a preset from configs/sweeps/ (name or path); flags given here override it", "command"),
    Flag("name", None, "the sweep; re-using a name resumes it (default: the preset's name, else 'sweep')", "run"),
    Flag("results_dir", "results", "where sweeps live", "run"),
    Flag("setting", "online", "online or offline", "axis"),
    Flag("seeds", None, "explicit seeds (instead of --num_seeds)", "axis", type=NONNEGATIVE_INT, nargs="+"),
    Flag("buffer_sizes", None, "buffer sizes for every dataset (default: run.py's per dataset)", "axis",
         type=NONNEGATIVE_INT, nargs="+"),
    Flag("norm_grid", {}, "a layer's hyper-grid, replacing its default; e.g. adab2n:kappa=0.4,lambd=0.1,ada_t0=1 "
         "(one point) or adab2n:kappa=0.1|0.4 (two); 'adab2n:' = its defaults", "axis", nargs="+",
         metavar="LAYER:K=V|V,..."),
    Flag("data_args", {}, "dataset options, e.g. seq-synth:image_size=8,train_per_class=8; without DATASET: to "
         "every dataset of the grid that takes them (download=false: CIFAR)", "axis", nargs="+",
         metavar="[DATASET:]K=V,..."),
    Flag("trial_args", {}, "other trial fields for every trial, '|' sweeps them, e.g. lr=0.03|0.1 n_tasks=5",
         "axis", nargs="+", metavar="K=V|V,..."),
    Flag("data_root", "data", "where on-disk datasets live; the launcher makes them ready there before Ray "
         "starts", "axis"),
    Flag("precision", "fp32", "bf16: every trial's training forward and loss under bf16 autocast (norm "
         "statistics, parameters and optimizer stay fp32); fast on GPUs and AMX/AVX-512-BF16 CPUs, slower on "
         "other CPUs (the launcher says so and asks); part of the trial id", "axis", metavar="fp32|bf16"),
    Flag("deterministic", False, "deterministic cuDNN and torch kernels where they exist (slower on GPUs; TF32 "
         "is always off); part of the trial id; CPU runs are reproducible without it", "axis", switch=True),
    Flag("gpus_per_trial", None, "GPUs per trial; fractional packs trials on a GPU, e.g. 0.25 (default with "
         "local GPUs: as many per GPU as fit under --usage_threshold of its memory, by estimate; 1 on a joined "
         "cluster; 0 without GPUs)", "run", type=NONNEGATIVE),
    Flag("cpus_per_trial", 1.0, "CPUs per trial", "run", type=POSITIVE),
    Flag("process_per_trial", False, "start a fresh trial process for every trial, so the dashboard's Actors "
         "page and task names name every trial (a reused process keeps its first trial's name); costs the "
         "interpreter and torch start, ~5 s a trial", "run", switch=True),
    Flag("max_failures", 2, "retries of a crashed trial (default {default}); a non-finite loss is never "
         "retried", "run", type=NONNEGATIVE_INT),
    Flag("fail_fast", 3, "stop the sweep once this many trials failed with the same config, data or code error "
         "(not a crash, an out-of-memory or a non-finite loss); 0: never (default {default})", "run",
         type=NONNEGATIVE_INT),
    Flag("address", None, "join this Ray cluster (host:port or auto) instead of starting one; --results_dir "
         "must be on shared storage", "run", preset=False),
    Flag("dashboard_port", None, "local dashboard port (default 8265 or the next free one)", "run", type=PORT,
         preset=False),
    Flag("dry_run", False, "check every trial (pre-flight), print the grid and exit; the data are not touched",
         "command", switch=True),
    Flag("prepare_data", False, "only the data stage: make every dataset of the grid ready under --data_root "
         "(download what is missing and downloadable, check what is there), then exit", "command", switch=True),
    Flag("report_only", False, "aggregate the sweep --name into tables and plots, run nothing", "command",
         switch=True),
    Flag("baseline", None, "the layer the report's paired tables compare every other layer to (default bn)",
         "run", metavar="LAYER", preset=False),
    Flag("yes", False, "start without asking", "command", switch=True),
)
DEFAULT = {f.name: f.default for f in FLAGS}   # for the option classes (RunOptions, ClusterOptions)
COMMANDS = tuple(f.name for f in FLAGS if f.kind == "command")
PRESET_KEYS = tuple(f.name for f in FLAGS if f.kind != "command" and f.preset)


def defaults(kind: str) -> dict[str, Any]:
    """name -> default of every flag of this kind (a fresh copy of list and dict defaults)."""
    return {f.name: (type(f.default)(f.default) if isinstance(f.default, (list, dict)) else f.default)
            for f in FLAGS if f.kind == kind}


def add_to(parser: argparse.ArgumentParser) -> None:
    """Every flag, by group. A flag not given stays absent (argparse.SUPPRESS), so that a preset
    can fill it; commands default to False/None in the parsed namespace."""
    groups = {name: parser.add_argument_group(name) for name in (RUNPY, OURS)}
    for f in FLAGS:
        default = (f.default if f.kind == "command" else argparse.SUPPRESS)
        kwargs: dict[str, Any] = {"default": default, "help": f.help_text()}
        if f.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs.update({k: v for k, v in (("type", f.type), ("nargs", f.nargs), ("metavar", f.metavar)) if v})
        groups[f.group].add_argument(f"--{f.name}", **kwargs)
