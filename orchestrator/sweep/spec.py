"""Flags (CLI, preset YAML, defaults) -> a `SweepSpec`: parsed and checked, not yet expanded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.config import PRECISIONS, SETTINGS, TrialConfig
from engine.errors import ConfigError
from engine.options import parse_kv
from orchestrator.flags import PRESET_KEYS, defaults
from orchestrator.sweep.values import (ALL_DATASETS, _alternatives, _as_list, _bool, _buffer_mode, _choice,
                                       _dataset_key, _flag_of, _int, _literal, _names, _norm_name, _seeds)

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "sweeps"

# The sweep's axes and their defaults (run.py's, where they carry over): declared in orchestrator/flags.py
DEFAULTS: dict[str, Any] = defaults("axis")

# Fields the grid itself sets; --trial_args may not set them (each has its own flag).
GRID_FIELDS = ("dataset", "method", "norm", "seed", "buffer_size", "buffer_mode", "setting",
               "epochs", "bs", "norm_args", "data_args", "device", "data_root", "deterministic",
               "precision")


@dataclass(frozen=True)
class SweepSpec:
    """The axes of a sweep, already parsed (lists, dicts), not yet validated by the engine."""
    datasets: tuple[str, ...]
    methods: tuple[str, ...]                        # CL methods (flag --models, TrialConfig.method)
    norms: tuple[str, ...]                          # normalization layers (flag --methods)
    seeds: tuple[int, ...]
    buffer_sizes: tuple[int, ...] | None            # None: per-dataset defaults
    buffer_mode: str = "reservoir"
    setting: str = "online"
    epochs: int | None = None
    bs: int | None = None
    norm_grid: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict)   # layer -> option -> values
    data_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)     # dataset or "*" -> options
    trial_args: Mapping[str, tuple] = field(default_factory=dict)                # TrialConfig field -> values
    data_root: str = "data"
    deterministic: bool = False
    precision: str = "fp32"


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset from configs/sweeps/ (by name) or any YAML path; keys are flag names."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))) or "none"
        raise ConfigError(f"--config {name_or_path!r}: no such preset or file; presets: {known}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    if raw is None:  # empty: taking it as "no preset" would run the whole default grid
        raise ConfigError(f"--config {path} is empty; give flag names and values (see configs/sweeps/)")
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values")
    raw.pop("description", None)
    odd = [k for k in raw if not isinstance(k, str)]
    if odd:  # YAML 1.1 reads a bare yes/no/on/off/true/false key as a boolean, a number as a number
        raise ConfigError(f"--config {path}: key {odd[0]!r} is not a flag name (YAML read it as "
                          f"{type(odd[0]).__name__}; keys are flag names, e.g. num_seeds)")
    unknown = sorted(set(raw) - set(PRESET_KEYS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(PRESET_KEYS))}")
    return raw


def spec_from_flags(flags: Mapping[str, Any]) -> SweepSpec:
    """Flags (defaults < preset < command line, already merged) -> SweepSpec."""
    f = {**DEFAULTS, **flags}
    if f["setting"] not in SETTINGS:
        raise ConfigError(f"--setting {f['setting']!r}; choose one of: {', '.join(SETTINGS)}")
    buffer_mode = _buffer_mode(f["buffer_mode"])
    return SweepSpec(
        datasets=_names("--datasets", f["datasets"], "datasets"),
        # run.py's flag names stay at the parser and in presets; in the code, `methods` are the CL
        # methods and `norms` the normalization layers, from here on
        methods=_names("--models", f["models"], "methods"),
        norms=_names("--methods", f["methods"], "norms"),
        seeds=_seeds(f["seeds"], f["num_seeds"]),
        buffer_sizes=None if f["buffer_sizes"] is None else tuple(
            _int("--buffer_sizes", b, low=0) for b in _as_list(f["buffer_sizes"])),
        buffer_mode=buffer_mode, setting=f["setting"],
        epochs=None if f["epochs"] is None else _int("--epochs", f["epochs"], low=1),
        bs=None if f["bs"] is None else _int("--bs", f["bs"], low=1),
        norm_grid=parse_norm_grid(f["norm_grid"]),
        data_args=parse_data_args(f["data_args"]),
        trial_args=parse_trial_args(f["trial_args"]),
        data_root=str(f["data_root"]),
        deterministic=_bool("--deterministic", f["deterministic"]),
        precision=_choice("--precision", f["precision"], PRECISIONS),
    )


def parse_norm_grid(given: Any) -> dict[str, dict[str, tuple]]:
    """`["adab2n:kappa=0.1|0.4,ada_t0=1", "cn:"]` or `{adab2n: {kappa: [0.1, 0.4]}}` ->
    `{"adab2n": {"kappa": ("0.1", "0.4"), "ada_t0": ("1",)}, "cn": {}}`.

    An entry replaces that norm's default grid; options it does not name take the layer's
    defaults. `norm:` (nothing after the colon) pins the norm to its defaults.
    """
    if isinstance(given, Mapping):
        items = [(norm, opts or {}) for norm, opts in given.items()]
    else:
        items = []
        for text in _as_list(given):
            norm, sep, rest = str(text).partition(":")
            if not sep or not norm.strip():
                raise ConfigError(f"--norm_grid {text!r} is not of the form layer:option=v1|v2,...")
            items.append((norm, {k: v.split("|") for k, v in parse_kv(rest, "--norm_grid").items()}))
    out: dict[str, dict[str, tuple]] = {}
    for norm, opts in items:
        if not isinstance(opts, Mapping):
            raise ConfigError(f"--norm_grid {norm}: expected option -> values, got {opts!r}")
        out[_norm_name(norm)] = {str(k): _alternatives(f"--norm_grid {norm}:{k}", v) for k, v in opts.items()}
    return out


def parse_data_args(given: Any) -> dict[str, dict[str, Any]]:
    """`["seq-synth:image_size=8", "noise=20"]` or `{seq-synth: {image_size: 8}}` -> per dataset
    options; an entry without `dataset:` applies to every dataset ("*")."""
    out: dict[str, dict[str, Any]] = {}
    if isinstance(given, Mapping):
        for key, opts in given.items():
            if isinstance(opts, Mapping):
                out.setdefault(_dataset_key(key), {}).update(opts)
            else:  # a flat mapping of options: applies to every dataset
                out.setdefault(ALL_DATASETS, {})[str(key)] = opts
        return out
    for text in _as_list(given):
        head, sep, rest = str(text).partition(":")
        key, body = (head, rest) if sep and "=" not in head else (ALL_DATASETS, str(text))
        out.setdefault(_dataset_key(key), {}).update(parse_kv(body, "--data_args"))
    return out


def parse_trial_args(given: Any) -> dict[str, tuple]:
    """`["lr=0.05|0.1", "n_tasks=5"]` or `{lr: [0.05, 0.1]}` -> `{"lr": (0.05, 0.1), "n_tasks": (5,)}`."""
    if isinstance(given, Mapping):
        items = {str(k): _alternatives(f"--trial_args {k}", v) for k, v in given.items()}
    else:
        items = {}
        for text in _as_list(given):
            for k, v in parse_kv(str(text), "--trial_args").items():
                items[k] = tuple(_literal(x) for x in v.split("|"))
    fields = set(TrialConfig.__dataclass_fields__)
    for key in items:
        if key == "device":  # Ray decides: a trial given a GPU runs on cuda, one without on the CPU
            raise ConfigError("--trial_args device: the launcher places trials; --gpus_per_trial 0 keeps "
                              "them on the CPU")
        if key in GRID_FIELDS:
            raise ConfigError(f"--trial_args {key}: set by its own flag (--{_flag_of(key)}), not here")
        if key not in fields:
            allowed = ", ".join(sorted(fields - set(GRID_FIELDS)))
            raise ConfigError(f"--trial_args: unknown trial field {key!r}; fields: {allowed}")
    return items
