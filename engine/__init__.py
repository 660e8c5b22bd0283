"""The continual-learning engine: one trial, in-process, torch only (never imports ray).

    from engine import TrialConfig, run_trial
    result = run_trial(TrialConfig(dataset="seq-digits", method="derpp", norm="tbbn"), "out/")
"""
from engine.version import __version__  # noqa: F401


def __getattr__(name):  # lazy: `import engine` stays cheap, and engine.config imports no torch
    if name == "run_trial":
        from engine.trainer import run_trial
        return run_trial
    if name == "TrialConfig":
        from engine.config import TrialConfig
        return TrialConfig
    if name in ("ConfigError", "TrainingError"):
        from engine import errors
        return getattr(errors, name)
    raise AttributeError(name)
