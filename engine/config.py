"""One frozen, validated description of a trial, and how its unset fields get their values.

Precedence for every field left unset (None): explicit value > configs/best_args.yaml for
(dataset, setting, method, buffer size) > best_args for (dataset, setting, method) > best_args
for (dataset, setting) > the method's defaults for the setting (`Method.SETTING_DEFAULTS`)
> the setting's protocol defaults (algorithms.md §1).
The resolved config is what result.json stores, so every run can be reproduced from it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.errors import ConfigError

SETTINGS = ("online", "offline")
PRECISIONS = ("fp32", "bf16")
BEST_ARGS_PATH = Path(__file__).resolve().parents[1] / "configs" / "best_args.yaml"

# Protocol defaults of algorithms.md §1; best_args.yaml refines them per dataset and method.
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "online": dict(epochs=1, bs=10, minibatch_size=10, lr=0.1, momentum=0.0, weight_decay=0.0,
                   lr_milestones=(), lr_gamma=1.0, selection="last"),
    "offline": dict(epochs=160, bs=48, minibatch_size=16, lr=0.1, momentum=0.0, weight_decay=1e-4,
                    lr_milestones=(80, 120), lr_gamma=0.1, selection="val"),
}
# Between the protocol defaults and best_args sit the method's own per-setting defaults
# (`Method.SETTING_DEFAULTS`): mammoth's methods train offline without a validation split
# (selection "last"); the TBBN/FACIL exemplar methods keep the protocol's "val".
# Fields that say where/how a trial runs, not what it computes: excluded from the trial id.
RUNTIME_FIELDS = ("device", "data_root")
# Fields added after trials were run: left out of the id at their default, so old ids stay.
ID_WHEN_SET = {"deterministic": False, "precision": "fp32", "compile": False}
# Fields renamed after trials were run: the id hashes their first name, so old ids stay.
ID_NAMES = {"method": "model"}
OPTION_FIELDS = ("norm_args", "method_args", "data_args")


def _field(default: Any, help: str, **flag: Any):
    """A trial field, with what `python -m engine --<name>` needs (engine/cli.py builds the flag from
    it): the help text and argparse settings; `registry="dataset"` lists that registry's names;
    `option="--model"` names the flag where it is not the field's name (mammoth's spelling)."""
    kw = {"default_factory": dict} if default is dict else {"default": default}
    return field(metadata={"help": help, "flag": flag}, **kw)


@dataclass(frozen=True)
class TrialConfig:
    """Every field is one flag of `python -m engine`; None: resolved (see `resolved`)."""
    dataset: str = _field("seq-digits", "the dataset", registry="dataset")
    method: str = _field("er", "the CL method (the flag is mammoth's; `method` in result.json)", registry="method",
                         option="--model")
    norm: str = _field("bn", "normalization layer replacing every BatchNorm2d (case-insensitive)", registry="norm")
    buffer_mode: str = _field("reservoir", "replay buffer", registry="buffer_mode")
    buffer_size: int = _field(200, "replay buffer capacity (items)", type=int)
    seed: int = _field(0, "trial seed; seed > 0 also permutes the class order", type=int)
    setting: str = _field("online", "online: one pass, small batches; offline: many epochs, exemplar memory",
                          choices=SETTINGS)
    epochs: int | None = _field(None, "epochs per task (default: online 1, offline from best_args)", type=int)
    bs: int | None = _field(None, "current-task rows per step (default: online 10, offline 48; exemplar methods "
                            "at t=0: bs + minibatch_size)", type=int)
    minibatch_size: int | None = _field(None, "replay rows per draw (default: online 10, offline 16)", type=int)
    lr: float | None = _field(None, "learning rate (default: configs/best_args.yaml)", type=float)
    n_tasks: int | None = _field(None, "number of tasks (default: the dataset's standard split)", type=int)
    nc_first_task: int | None = _field(None, "classes in the first task (default: even split)", type=int)
    backbone: str | None = _field(None, "the network (default: per dataset)", registry="backbone")
    momentum: float | None = _field(None, "SGD momentum (default: 0)", type=float)
    weight_decay: float | None = _field(None, "SGD weight decay (default: online 0, offline 1e-4)", type=float)
    lr_milestones: tuple[int, ...] | None = _field(None, "offline: epochs at which the LR drops", type=int,
                                                   nargs="*")
    lr_gamma: float | None = _field(None, "offline: LR factor at each milestone", type=float)
    selection: str | None = _field(None, "offline: keep the best-validation epoch (val: a 10%% per-class split) "
                                   "or the last", choices=("val", "last"))
    norm_args: Mapping[str, Any] = _field(dict, "norm-layer options, e.g. kappa=0.4,lambd=0.1", metavar="K=V,...")
    method_args: Mapping[str, Any] = _field(dict, "method options, e.g. alpha=0.1,beta=0.5", metavar="K=V,...")
    data_args: Mapping[str, Any] = _field(dict, "dataset options (seq-synth: image_size=32,...)", metavar="K=V,...")
    device: str = _field("auto", "auto | cpu | cuda | cuda:N")
    data_root: str = _field("data", "where on-disk datasets live")
    deterministic: bool = _field(False, "deterministic cuDNN/torch algorithms on a GPU (slower; TF32 is always "
                                 "off; engine/device.py)", action="store_true")
    precision: str = _field("fp32", "fp32 or bf16: forward and loss under autocast; norm statistics, parameters "
                            "and optimizer stay fp32 (engine/device.py)", choices=PRECISIONS)
    compile: bool = _field(False, "torch.compile the training forward (inductor; on CUDA mode reduce-overhead, "
                           "CUDA graphs). No faster on the CPU (benchmarks/RESULTS.md)", action="store_true")

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ConfigError(f"unknown setting {self.setting!r}; choose one of: {', '.join(SETTINGS)}")
        for name in ("epochs", "bs", "n_tasks", "nc_first_task"):
            _positive_int(name, getattr(self, name), allow_none=True)
        _nonnegative_int("minibatch_size", self.minibatch_size)
        _nonnegative_int("buffer_size", self.buffer_size)
        _nonnegative_int("seed", self.seed)
        if self.lr is not None and not (_is_number(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be a positive finite number")
        for name in ("momentum", "weight_decay", "lr_gamma"):
            if getattr(self, name) is not None and not _is_number(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a finite number")
        if self.selection not in (None, "val", "last"):
            raise ConfigError(f"unknown selection {self.selection!r}; choose one of: val, last")
        if self.lr_milestones is not None:
            milestones = tuple(self.lr_milestones) if isinstance(self.lr_milestones, (list, tuple)) else (self.lr_milestones,)
            for m in milestones:
                _positive_int("lr_milestones", m)
            object.__setattr__(self, "lr_milestones", milestones)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"unknown device {self.device!r}; choose one of: auto, cpu, cuda, cuda:N")
        for name in ("deterministic", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        for name in OPTION_FIELDS:
            object.__setattr__(self, name, dict(getattr(self, name) or {}))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "TrialConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown trial field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in raw.items()})

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["lr_milestones"] is not None:
            out["lr_milestones"] = list(out["lr_milestones"])
        return out

    # ---- resolution ---------------------------------------------------------------------
    def resolved(self) -> "TrialConfig":
        """Canonical names, every None filled, every option validated. Idempotent."""
        from engine import backbones, buffers, datasets, methods, norms  # registries import torch

        dataset = datasets.REGISTRY.canonical(self.dataset)
        method = methods.REGISTRY.canonical(self.method)
        norm = norms.REGISTRY.canonical(self.norm)
        method_cls = methods.REGISTRY.get(method)
        values = dict(PROTOCOL_DEFAULTS[self.setting])
        values.update(method_cls.SETTING_DEFAULTS.get(self.setting, {}))
        values.update(_best_args(dataset, self.setting, method, self.buffer_size))
        explicit = {k: v for k, v in self.to_dict().items() if v is not None}
        for name in OPTION_FIELDS:  # option dicts merge key by key, explicit keys winning
            explicit[name] = {**values.pop(name, {}), **explicit.get(name, {})}
        values.update(explicit)
        values.update(dataset=dataset, method=method, norm=norm, buffer_mode=buffers.REGISTRY.canonical(self.buffer_mode))

        values["method_args"] = method_cls.resolve_options(values["method_args"])
        values["norm_args"] = norms.resolve_options(norm, values["norm_args"], setting=self.setting)
        values["data_args"] = datasets.resolve_options(dataset, values["data_args"])
        spec = datasets.REGISTRY.get(dataset)
        if values.get("n_tasks") is None:
            values["n_tasks"] = spec.n_tasks
        if values.get("backbone") is None:
            values["backbone"] = spec.default_backbone
        values["backbone"] = backbones.REGISTRY.canonical(values["backbone"])
        cfg = TrialConfig.from_dict(values)
        method_cls.check_config(cfg)
        return cfg

    def trial_id(self) -> str:
        """A stable hash of what the trial computes (resolve first, so defaults count)."""
        payload = {ID_NAMES.get(k, k): v for k, v in self.to_dict().items()
                   if k not in RUNTIME_FIELDS and not (k in ID_WHEN_SET and v == ID_WHEN_SET[k])}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def option_of(name: str) -> str:
    """The `python -m engine` flag of the trial field `name`."""
    return next(f.metadata["flag"].get("option", f"--{name}") for f in fields(TrialConfig) if f.name == name)


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


def _is_number(value: Any) -> bool:
    """A finite real number: a string from a preset or --trial_args is not one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _nonnegative_int(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}={value!r} must be a non-negative integer")


@lru_cache(maxsize=1)
def _load_best_args() -> dict:
    with open(BEST_ARGS_PATH) as fh:
        return yaml.safe_load(fh) or {}


def _best_args(dataset: str, setting: str, method: str, buffer_size: int) -> dict[str, Any]:
    table = _load_best_args().get(dataset, {}).get(setting, {})
    out: dict[str, Any] = {}
    for layer in (table.get("default", {}),
                  table.get(method, {}).get("default", {}),
                  table.get(method, {}).get(buffer_size, {})):
        for key, value in layer.items():
            out[key] = {**out.get(key, {}), **value} if key in OPTION_FIELDS else value
    if "lr_milestones" in out:
        out["lr_milestones"] = tuple(out["lr_milestones"])
    return out
