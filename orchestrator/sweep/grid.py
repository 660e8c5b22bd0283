"""A `SweepSpec` -> its trials (resolved by the engine), their names and the grid's summary."""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Mapping

from engine.config import TrialConfig
from engine.errors import ConfigError
from orchestrator.sweep.spec import SweepSpec
from orchestrator.sweep.values import ALL_DATASETS, _dataset_key, _norm_name

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


@dataclass(frozen=True)
class PlannedTrial:
    trial_id: str
    run_name: str                # log file and Tune trial name (unique in the sweep)
    config: TrialConfig          # resolved
    wandb_name: str = ""         # run.py's W&B name: the same across seeds


def expand(spec: SweepSpec) -> list[PlannedTrial]:
    """Every trial of the grid, resolved by the engine, without duplicates (first one wins)."""
    norms = [_norm_name(m) for m in spec.norms]
    _check_entries(spec, norms)
    trials: dict[str, PlannedTrial] = {}
    trial_axes = list(spec.trial_args.items())
    for seed, dataset, norm, method in itertools.product(spec.seeds, spec.datasets, norms, spec.methods):
        dataset_key = _dataset_key(dataset)
        for buf in buffer_sizes_for(spec, dataset_key):
            for point in grid_points(norm_grid_of(spec, norm, dataset_key)):
                for extra in itertools.product(*(vals for _, vals in trial_axes)):
                    extras = dict(zip((k for k, _ in trial_axes), extra))
                    cfg = TrialConfig.from_dict(dict(
                        dataset=dataset, method=method, norm=norm, seed=seed, buffer_size=buf,
                        buffer_mode=spec.buffer_mode, setting=spec.setting, epochs=spec.epochs,
                        bs=spec.bs, norm_args=point, data_args=data_args_for(spec, dataset_key),
                        data_root=spec.data_root, deterministic=spec.deterministic,
                        precision=spec.precision, **extras)).resolved()
                    varying = [k for k in extras if len(spec.trial_args[k]) > 1]
                    trials.setdefault(cfg.trial_id(), PlannedTrial(
                        cfg.trial_id(), run_name(cfg, point, varying), cfg, wandb_name(cfg, point, varying)))
    return _unique_names(list(trials.values()))


def _check_entries(spec: SweepSpec, grid_norms: list[str]) -> None:
    """What the trials alone would not check: --data_args / --norm_grid entries for a dataset or
    norm outside the grid (a bad value is an error wherever it is; then ignored with a note in
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
    for norm in sorted(set(spec.norm_grid) - set(grid_norms)):
        for point in grid_points(spec.norm_grid[norm]):
            norms.resolve_options(norm, point, setting=spec.setting)


def unused_data_args(spec: SweepSpec) -> list[str]:
    in_grid = {_dataset_key(d) for d in spec.datasets} | {ALL_DATASETS}
    return sorted(set(spec.data_args) - in_grid)


def buffer_sizes_for(spec: SweepSpec, dataset: str) -> tuple[int, ...]:
    if spec.buffer_sizes is not None:
        return spec.buffer_sizes
    if dataset not in DEFAULT_BUFFER_SIZES:
        raise ConfigError(f"no default buffer sizes for {dataset}; pass --buffer_sizes")
    return DEFAULT_BUFFER_SIZES[dataset]


def norm_grid_of(spec: SweepSpec, norm: str, dataset: str) -> dict[str, tuple]:
    if norm in spec.norm_grid:
        return dict(spec.norm_grid[norm])
    grid = dict(DEFAULT_NORM_GRIDS.get(norm, {}))
    grid.update(DATASET_NORM_GRIDS.get(dataset, {}).get(norm, {}))
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
    """run.py's name: `{dataset}_ep{epochs}_{method}_buf{size}_{norm}[_{opt}{value}]_seed{s}_{mode}`,
    plus `_offline` and any swept --trial_args, so names stay unique within a sweep."""
    name = (f"{cfg.dataset}_ep{cfg.epochs}_{cfg.method}_buf{cfg.buffer_size}_{_norm_label(cfg, grid_point)}"
            f"_seed{cfg.seed}_{cfg.buffer_mode}")
    return name + _suffix(cfg, varying)


def wandb_name(cfg: TrialConfig, grid_point: Mapping[str, Any], varying: list[str]) -> str:
    """run.py's --wandb_name: `{method}{size}_{norm}[_{opt}{value}]` (seeds share it; the W&B
    project is per dataset, the group is the sweep)."""
    return f"{cfg.method}{cfg.buffer_size}_{_norm_label(cfg, grid_point)}" + _suffix(cfg, varying)


def _norm_label(cfg: TrialConfig, grid_point: Mapping[str, Any]) -> str:
    return cfg.norm + "".join(f"_{NAME_ABBREVIATIONS.get(k, k)}{cfg.norm_args[k]}" for k in grid_point)


def _suffix(cfg: TrialConfig, varying: list[str]) -> str:
    setting = f"_{cfg.setting}" if cfg.setting != "online" else ""
    return setting + "".join(f"_{k}{getattr(cfg, k)}" for k in varying)


def summarize_grid(spec: SweepSpec, trials: list[PlannedTrial]) -> list[str]:
    """Counts per axis, for the confirmation prompt."""
    grid_norms = {}
    for m in spec.norms:
        name = _norm_name(m)
        sizes = {len(grid_points(norm_grid_of(spec, name, _dataset_key(d)))) for d in spec.datasets}
        grid_norms[name] = "/".join(map(str, sorted(sizes)))
    bufs = {d: buffer_sizes_for(spec, _dataset_key(d)) for d in spec.datasets}
    lines = [
        f"  seeds        {len(spec.seeds)}: {', '.join(map(str, spec.seeds))}",
        f"  datasets     {len(spec.datasets)}: {', '.join(spec.datasets)}  (setting {spec.setting})",
        f"  methods      {len(spec.methods)}: {', '.join(spec.methods)}  (--models)",
        "  buffer sizes " + "; ".join(f"{d}: {', '.join(map(str, b))}" for d, b in bufs.items())
        + f"  ({spec.buffer_mode})",
        "  norms        " + ", ".join(f"{k} x{v}" if v != "1" else k for k, v in grid_norms.items())
        + "   (--methods; xN: points of the layer's hyper-grid)",
    ]
    for key, values in spec.trial_args.items():
        lines.append(f"  {key:<12} {len(values)}: {', '.join(map(str, values))}")
    unused = sorted(set(spec.norm_grid) - set(grid_norms))
    if unused:
        lines.append(f"  (--norm_grid for {', '.join(unused)} ignored: not among --methods)")
    if unused_data_args(spec):
        lines.append(f"  (--data_args for {', '.join(unused_data_args(spec))} ignored: not among --datasets)")
    lines.append(f"  = {len(trials)} trials")
    return lines


def _unique_names(trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """Log files are named after runs: a name shared by several trials gets the trial id."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.run_name] = counts.get(t.run_name, 0) + 1
    return [t if counts[t.run_name] == 1 else dataclasses.replace(t, run_name=f"{t.run_name}_{t.trial_id}")
            for t in trials]
