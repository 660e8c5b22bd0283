"""What a sweep is: flags (CLI, preset YAML, defaults) -> a `SweepSpec` -> resolved trials.

Pure: no Ray, no files written. Every trial is an engine `TrialConfig` resolved by the engine
itself, so bad input (unknown dataset/model/layer, an option a layer does not take) surfaces
here as the engine's one-line `ConfigError`, before anything starts. A trial's identity is
`cfg.trial_id()`: a stable hash of what it computes, which is how a re-run knows what is done.

Grid order follows AdaB2N's run.py: seed x dataset x layer x model x buffer size x layer grid
(x any `--trial_args` alternatives), seed outermost so that seed 0 of everything finishes first.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.config import BUFFER_MODES, PRECISIONS, SETTINGS, TrialConfig
from engine.errors import ConfigError
from engine.options import parse_kv

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "sweeps"

# run.py's defaults, where they carry over (README: "Flags").
DEFAULTS: dict[str, Any] = {
    "models": ["derpp", "er_ace"],
    "datasets": ["seq-cifar10", "seq-cifar100", "seq-miniimg"],
    "methods": ["BN", "LN", "IN", "GN", "CN", "AdaB2N"],
    "num_seeds": 3,
    "seeds": None,
    "bs": None,             # None: the setting's protocol value (online 10, as run.py)
    "epochs": None,         # None: the setting's protocol value (online 1, as run.py)
    "buffer_mode": "reservoir",
    "buffer_sizes": None,   # None: DEFAULT_BUFFER_SIZES per dataset
    "setting": "online",
    "norm_grid": {},
    "data_args": {},
    "trial_args": {},
    "data_root": "data",
    "deterministic": False,  # cuDNN/torch deterministic kernels (engine.device.set_numerics)
    "precision": "fp32",     # bf16: the training forward under autocast (engine.device.autocast)
}

# run.py's get_buffers(), plus sizes for the datasets it did not have.
DEFAULT_BUFFER_SIZES: dict[str, tuple[int, ...]] = {
    "seq-cifar10": (500, 2000),
    "seq-cifar100": (2000, 5000),
    "seq-miniimg": (2000, 5000),
    "seq-tinyimg": (2000, 5000),
    "seq-imagenet100": (2000,),   # TBBN's offline protocol: 2000 exemplars (20 per class)
    "seq-digits": (100, 200),
    "seq-synth": (50, 200),
}

# run.py's AdaB2N grid (paper Appendix): used for a layer that has no --norm_grid entry.
DEFAULT_NORM_GRIDS: dict[str, dict[str, tuple]] = {
    "adab2n": {"kappa": (0.1, 0.4, 0.7, 1.0), "lambd": (0.01, 0.1, 1.0, 10.0), "ada_t0": (0, 1)},
}
# ... with run.py's smaller lambdas on mini-ImageNet.
DATASET_NORM_GRIDS: dict[str, dict[str, dict[str, tuple]]] = {
    "seq-miniimg": {"adab2n": {"lambd": (0.00001, 0.0001, 0.001, 0.01)}},
}
# run.py abbreviates some options in run names (AdaB2N_kappa0.4_lambd0.1_ada1).
NAME_ABBREVIATIONS = {"ada_t0": "ada"}

# Fields the grid itself sets; --trial_args may not set them (each has its own flag).
GRID_FIELDS = ("dataset", "model", "norm", "seed", "buffer_size", "buffer_mode", "setting",
               "epochs", "bs", "norm_args", "data_args", "device", "data_root", "deterministic",
               "precision")
ALL_DATASETS = "*"


@dataclass(frozen=True)
class SweepSpec:
    """The axes of a sweep, already parsed (lists, dicts), not yet validated by the engine."""
    datasets: tuple[str, ...]
    methods: tuple[str, ...]                        # CL methods (flag --models, TrialConfig.model)
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


@dataclass(frozen=True)
class PlannedTrial:
    trial_id: str
    run_name: str                # log file and Tune trial name (unique in the sweep)
    config: TrialConfig          # resolved
    wandb_name: str = ""         # run.py's W&B name: the same across seeds


# ---- flags -> spec ----------------------------------------------------------------------------

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
    unknown = sorted(set(raw) - set(PRESET_KEYS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(PRESET_KEYS))}")
    return raw


# Keys a preset may set: the sweep axes above plus the run options the launcher reads.
PRESET_KEYS = tuple(DEFAULTS) + (
    "name", "results_dir", "logdir", "gpus_per_trial", "cpus_per_trial", "max_failures",
    "fail_fast", "nowandb", "wandb_project", "usage_threshold", "waitsecs", "coldsecs")


def spec_from_flags(flags: Mapping[str, Any]) -> SweepSpec:
    """Flags (defaults < preset < command line, already merged) -> SweepSpec."""
    f = {**DEFAULTS, **flags}
    if f["setting"] not in SETTINGS:
        raise ConfigError(f"--setting {f['setting']!r}; choose one of: {', '.join(SETTINGS)}")
    if f["buffer_mode"] not in BUFFER_MODES:
        raise ConfigError(f"--buffer_mode {f['buffer_mode']!r}; choose one of: {', '.join(BUFFER_MODES)}")
    return SweepSpec(
        datasets=_names("--datasets", f["datasets"]),
        # run.py's flag names stay at the parser and in presets; in the code, `methods` are the CL
        # methods and `norms` the normalization layers, from here on
        methods=_names("--models", f["models"]),
        norms=_names("--methods", f["methods"]),
        seeds=_seeds(f["seeds"], f["num_seeds"]),
        buffer_sizes=None if f["buffer_sizes"] is None else tuple(
            _int("--buffer_sizes", b, low=0) for b in _as_list(f["buffer_sizes"])),
        buffer_mode=f["buffer_mode"], setting=f["setting"],
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

    An entry replaces that layer's default grid; options it does not name take the layer's
    defaults. `layer:` (nothing after the colon) pins the layer to its defaults.
    """
    if isinstance(given, Mapping):
        items = [(layer, opts or {}) for layer, opts in given.items()]
    else:
        items = []
        for text in _as_list(given):
            layer, sep, rest = str(text).partition(":")
            if not sep or not layer.strip():
                raise ConfigError(f"--norm_grid {text!r} is not of the form layer:option=v1|v2,...")
            items.append((layer, {k: v.split("|") for k, v in parse_kv(rest, "--norm_grid").items()}))
    out: dict[str, dict[str, tuple]] = {}
    for layer, opts in items:
        if not isinstance(opts, Mapping):
            raise ConfigError(f"--norm_grid {layer}: expected option -> values, got {opts!r}")
        out[_norm_name(layer)] = {str(k): _alternatives(f"--norm_grid {layer}:{k}", v) for k, v in opts.items()}
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


# ---- spec -> trials ---------------------------------------------------------------------------

def expand(spec: SweepSpec) -> list[PlannedTrial]:
    """Every trial of the grid, resolved by the engine, without duplicates (first one wins)."""
    norms = [_norm_name(m) for m in spec.norms]
    _check_entries(spec, norms)
    trials: dict[str, PlannedTrial] = {}
    trial_axes = list(spec.trial_args.items())
    for seed, dataset, norm, method in itertools.product(spec.seeds, spec.datasets, norms, spec.methods):
        dataset_key = _dataset_key(dataset)
        for buf in buffer_sizes_for(spec, dataset_key):
            for point in grid_points(layer_grid(spec, norm, dataset_key)):
                for extra in itertools.product(*(vals for _, vals in trial_axes)):
                    extras = dict(zip((k for k, _ in trial_axes), extra))
                    cfg = TrialConfig.from_dict(dict(
                        dataset=dataset, model=method, norm=norm, seed=seed, buffer_size=buf,
                        buffer_mode=spec.buffer_mode, setting=spec.setting, epochs=spec.epochs,
                        bs=spec.bs, norm_args=point, data_args=data_args_for(spec, dataset_key),
                        data_root=spec.data_root, deterministic=spec.deterministic,
                        precision=spec.precision, **extras)).resolved()
                    varying = [k for k in extras if len(spec.trial_args[k]) > 1]
                    trials.setdefault(cfg.trial_id(), PlannedTrial(
                        cfg.trial_id(), run_name(cfg, point, varying), cfg, wandb_name(cfg, point, varying)))
    return _unique_names(list(trials.values()))


def _check_entries(spec: SweepSpec, layers: list[str]) -> None:
    """What the trials alone would not check: --data_args / --norm_grid entries for a dataset or
    layer outside the grid (a bad value is an error wherever it is; then ignored with a note in
    summarize_grid), and an option without `dataset:` that no dataset of the grid takes."""
    from engine import datasets, norms

    for name in unused_data_args(spec):
        datasets.resolve_options(name, spec.data_args[name])
    grid = [_dataset_key(d) for d in spec.datasets]
    taken = {k for d in grid for k in datasets.REGISTRY.get(d).options}
    stray = sorted(set(spec.data_args.get(ALL_DATASETS, {})) - taken)
    if stray:
        raise ConfigError(f"--data_args {stray[0]}: no dataset of the grid ({', '.join(grid)}) takes it; "
                          f"their options: {', '.join(sorted(taken)) or 'none'}")
    for layer in sorted(set(spec.norm_grid) - set(layers)):
        for point in grid_points(spec.norm_grid[layer]):
            norms.resolve_options(layer, point, setting=spec.setting)


def unused_data_args(spec: SweepSpec) -> list[str]:
    in_grid = {_dataset_key(d) for d in spec.datasets} | {ALL_DATASETS}
    return sorted(set(spec.data_args) - in_grid)


def buffer_sizes_for(spec: SweepSpec, dataset: str) -> tuple[int, ...]:
    if spec.buffer_sizes is not None:
        return spec.buffer_sizes
    if dataset not in DEFAULT_BUFFER_SIZES:
        raise ConfigError(f"no default buffer sizes for {dataset}; pass --buffer_sizes")
    return DEFAULT_BUFFER_SIZES[dataset]


def layer_grid(spec: SweepSpec, layer: str, dataset: str) -> dict[str, tuple]:
    if layer in spec.norm_grid:
        return dict(spec.norm_grid[layer])
    grid = dict(DEFAULT_NORM_GRIDS.get(layer, {}))
    grid.update(DATASET_NORM_GRIDS.get(dataset, {}).get(layer, {}))
    return grid


def grid_points(grid: Mapping[str, tuple]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def data_args_for(spec: SweepSpec, dataset: str) -> dict[str, Any]:
    """An entry without `dataset:` goes to the datasets that take its options (download=false
    reaches CIFAR, not seq-miniimg); a dataset's own entry is checked whole."""
    from engine import datasets

    declared = datasets.REGISTRY.get(dataset).options
    shared = {k: v for k, v in spec.data_args.get(ALL_DATASETS, {}).items() if k in declared}
    return {**shared, **spec.data_args.get(dataset, {})}


def run_name(cfg: TrialConfig, grid_point: Mapping[str, Any], varying: list[str]) -> str:
    """run.py's name: `{dataset}_ep{epochs}_{model}_buf{size}_{layer}[_{opt}{value}]_seed{s}_{mode}`,
    plus `_offline` and any swept --trial_args, so names stay unique within a sweep."""
    name = (f"{cfg.dataset}_ep{cfg.epochs}_{cfg.model}_buf{cfg.buffer_size}_{_layer_label(cfg, grid_point)}"
            f"_seed{cfg.seed}_{cfg.buffer_mode}")
    return name + _suffix(cfg, varying)


def wandb_name(cfg: TrialConfig, grid_point: Mapping[str, Any], varying: list[str]) -> str:
    """run.py's --wandb_name: `{model}{size}_{layer}[_{opt}{value}]` (seeds share it; the W&B
    project is per dataset, the group is the sweep)."""
    return f"{cfg.model}{cfg.buffer_size}_{_layer_label(cfg, grid_point)}" + _suffix(cfg, varying)


def _layer_label(cfg: TrialConfig, grid_point: Mapping[str, Any]) -> str:
    return cfg.norm + "".join(f"_{NAME_ABBREVIATIONS.get(k, k)}{cfg.norm_args[k]}" for k in grid_point)


def _suffix(cfg: TrialConfig, varying: list[str]) -> str:
    setting = f"_{cfg.setting}" if cfg.setting != "online" else ""
    return setting + "".join(f"_{k}{getattr(cfg, k)}" for k in varying)


def summarize_grid(spec: SweepSpec, trials: list[PlannedTrial]) -> list[str]:
    """Counts per axis, for the confirmation prompt."""
    layers = {}
    for m in spec.norms:
        name = _norm_name(m)
        sizes = {len(grid_points(layer_grid(spec, name, _dataset_key(d)))) for d in spec.datasets}
        layers[name] = "/".join(map(str, sorted(sizes)))
    bufs = {d: buffer_sizes_for(spec, _dataset_key(d)) for d in spec.datasets}
    lines = [
        f"  seeds        {len(spec.seeds)}: {', '.join(map(str, spec.seeds))}",
        f"  datasets     {len(spec.datasets)}: {', '.join(spec.datasets)}  (setting {spec.setting})",
        f"  models       {len(spec.methods)}: {', '.join(spec.methods)}",
        "  buffer sizes " + "; ".join(f"{d}: {', '.join(map(str, b))}" for d, b in bufs.items())
        + f"  ({spec.buffer_mode})",
        "  layers       " + ", ".join(f"{k} x{v}" if v != "1" else k for k, v in layers.items())
        + "   (xN: points of the layer's hyper-grid)",
    ]
    for key, values in spec.trial_args.items():
        lines.append(f"  {key:<12} {len(values)}: {', '.join(map(str, values))}")
    unused = sorted(set(spec.norm_grid) - set(layers))
    if unused:
        lines.append(f"  (--norm_grid for {', '.join(unused)} ignored: not among --methods)")
    if unused_data_args(spec):
        lines.append(f"  (--data_args for {', '.join(unused_data_args(spec))} ignored: not among --datasets)")
    lines.append(f"  = {len(trials)} trials")
    return lines


# ---- helpers ----------------------------------------------------------------------------------

def _unique_names(trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """Log files are named after runs: a name shared by several trials gets the trial id."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.run_name] = counts.get(t.run_name, 0) + 1
    return [t if counts[t.run_name] == 1 else dataclasses.replace(t, run_name=f"{t.run_name}_{t.trial_id}")
            for t in trials]


def _norm_name(name: str) -> str:
    from engine import norms
    return norms.REGISTRY.canonical(str(name).strip())


def _dataset_key(name: str) -> str:
    if name == ALL_DATASETS:
        return name
    from engine import datasets
    return datasets.REGISTRY.canonical(str(name).strip())


def _names(flag: str, value: Any) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(str(v).strip() for v in _as_list(value) if str(v).strip()))
    if not names:
        raise ConfigError(f"{flag} is empty; give at least one name")
    return names


def _seeds(seeds: Any, num_seeds: Any) -> tuple[int, ...]:
    if seeds is not None:
        out = tuple(dict.fromkeys(_int("--seeds", s, low=0) for s in _as_list(seeds)))
        if not out:
            raise ConfigError("--seeds is empty; give at least one seed")
        return out
    return tuple(range(_int("--num_seeds", num_seeds, low=1)))


def _choice(flag: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _bool(flag: str, value: Any) -> bool:
    if not isinstance(value, bool):   # a preset's `deterministic: yes` is YAML's true; "no" would be text
        raise ConfigError(f"{flag} {value!r}: expected true or false")
    return value


def _int(flag: str, value: Any, low: int) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {value!r} is not an integer") from None
    if number < low:
        raise ConfigError(f"{flag} {number} must be at least {low}")
    return number


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    return list(value)


def _alternatives(where: str, value: Any) -> tuple:
    values = tuple(_as_list(value))
    if not values:
        raise ConfigError(f"{where}: no values")
    return values


def _literal(text: str) -> Any:
    """CLI text -> int, float, bool, None or the string itself (the engine checks the type)."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _flag_of(field_name: str) -> str:
    return {"dataset": "datasets", "model": "models", "norm": "methods", "seed": "seeds",
            "buffer_size": "buffer_sizes", "norm_args": "norm_grid"}.get(field_name, field_name)

