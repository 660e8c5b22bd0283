"""Weights & Biases: decide the mode once in the launcher, open one run per trial in the trial.

Modes: "online" (an API key is configured), "offline" (no key: runs are written under the
sweep's _wandb/ directory for `wandb sync` later), "disabled" (--nowandb, or wandb missing).
We never log in, never prompt, and never pass or write the key: a key reaches a trial only
through the environment or ~/.netrc of the node it runs on (passing it as an argument would
pickle it into Tune's experiment state).
"""
from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def choose_mode(nowandb: bool) -> tuple[str, str | None]:
    """(mode, a line to print once or None)."""
    if nowandb:
        return "disabled", None
    if importlib.util.find_spec("wandb") is None:
        return "disabled", "W&B: wandb is not installed; no W&B logging (pip install wandb)"
    forced = os.environ.get("WANDB_MODE", "").lower()
    if forced in ("disabled", "offline", "dryrun"):
        mode = "offline" if forced == "dryrun" else forced
        return mode, f"W&B: WANDB_MODE={forced} from the environment"
    if has_api_key():
        return "online", None
    return "offline", "W&B: no API key found (WANDB_API_KEY or `wandb login`); logging offline"


def has_api_key() -> bool:
    """Is a key configured on this machine? Reads the environment and ~/.netrc, nothing else."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def sync_hint(wandb_dir: Path) -> str:
    return f"W&B: upload the offline runs later with: wandb sync {wandb_dir}/wandb/offline-run-*"


def run_settings(mode: str, project: str, dataset: str, group: str, run_name: str, trial_id: str,
                 wandb_dir: Path) -> dict[str, Any] | None:
    """What a trial needs to open its run (plain data: it travels in the trial's config)."""
    if mode == "disabled":
        return None
    return {"mode": mode, "project": f"{project}_{dataset}", "group": group, "name": run_name,
            # stable per sweep and trial: a retried or resumed trial continues the same run
            "id": f"{group}-{trial_id}"[-64:], "dir": str(wandb_dir)}


class TrialRun:
    """The trial side: one W&B run, per-task metrics; a no-op when settings is None."""

    def __init__(self, settings: dict[str, Any] | None, config: dict[str, Any], say):
        self.run, self.say = None, say
        if settings is None:
            return
        from ray.air.integrations.wandb import setup_wandb

        mode = settings["mode"]
        if mode == "online" and not has_api_key():  # another node without a key
            mode = "offline"
            say("W&B: no API key on this node; logging offline")
        Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # setup_wandb asks for a key unless offline
        try:
            self.run = setup_wandb(config=config, project=settings["project"], group=settings["group"],
                                   name=settings["name"], trial_id=settings["id"], trial_name=settings["name"],
                                   dir=settings["dir"], mode=mode, resume="allow", reinit="finish_previous")
        except Exception as exc:  # W&B trouble must not fail (and retry) the trial
            self._give_up("start", exc)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as exc:
                self._give_up("log", exc)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.summary.update(metrics)
            except Exception as exc:
                self._give_up("write the summary", exc)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1 if failed else 0)
            except Exception as exc:
                self._give_up("finish", exc)

    def _give_up(self, what: str, exc: Exception) -> None:
        self.run = None
        self.say(f"W&B: could not {what} ({type(exc).__name__}: {exc}); the trial goes on without W&B")
