"""What a sweep is: flags (CLI, preset YAML, defaults) -> a `SweepSpec` -> resolved trials.

Pure: no Ray, no files written. Every trial is an engine `TrialConfig` resolved by the engine
itself, so bad input (unknown dataset/method/norm, an option a norm does not take) surfaces
here as the engine's one-line `ConfigError`, before anything starts. A trial's identity is
`cfg.trial_id()`: a stable hash of what it computes, which is how a re-run knows what is done.

Grid order follows AdaB2N's run.py: seed x dataset x norm x method x buffer size x norm grid
(x any `--trial_args` alternatives), seed outermost so that seed 0 of everything finishes first.
"""
from orchestrator.sweep.grid import (DATASET_NORM_GRIDS, DEFAULT_BUFFER_SIZES, DEFAULT_NORM_GRIDS, PlannedTrial,
                                     _unique_names, buffer_sizes_for, data_args_for, expand, grid_points,
                                     norm_grid_of, run_name, summarize_grid, unused_data_args, wandb_name)
from orchestrator.sweep.spec import (DEFAULTS, PRESET_DIR, PRESET_KEYS, SweepSpec, load_preset, parse_data_args,
                                     parse_norm_grid, parse_trial_args, spec_from_flags)

__all__ = ["DATASET_NORM_GRIDS", "DEFAULTS", "DEFAULT_BUFFER_SIZES", "DEFAULT_NORM_GRIDS", "PRESET_DIR",
           "PRESET_KEYS", "PlannedTrial", "SweepSpec", "buffer_sizes_for", "data_args_for", "expand",
           "grid_points", "norm_grid_of", "load_preset", "parse_data_args", "parse_norm_grid", "parse_trial_args",
           "run_name", "spec_from_flags", "summarize_grid", "unused_data_args", "wandb_name", "_unique_names"]
