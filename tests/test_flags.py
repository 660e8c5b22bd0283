"""Every launcher flag is declared once (orchestrator/flags.py): the parser, --help, the sweep's
defaults, the run options' defaults, the preset keys and the README all follow that declaration."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import flags, sweep
from orchestrator.cluster import ClusterOptions
from orchestrator.runner import RunOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def help_text():
    out = subprocess.run([sys.executable, str(ROOT / "launcher.py"), "--help"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "1000", "PATH": ""}).stdout
    return re.sub(r"\s+", " ", out)


def test_help_lists_every_flag_with_its_declared_default(help_text):
    for f in flags.FLAGS:
        assert f"--{f.name}" in help_text
        assert f.help_text() in help_text, f.name
        if not f.switch and f.default not in (None, {}) and f.kind != "command":
            assert f.shown() in f.help_text(), f"--{f.name}: its help does not state its default {f.shown()}"


def test_the_sweep_and_the_run_options_take_their_defaults_from_the_declaration():
    assert sweep.DEFAULTS == {f.name: f.default for f in flags.FLAGS if f.kind == "axis"}
    assert set(sweep.PRESET_KEYS) == {f.name for f in flags.FLAGS if f.kind != "command" and f.preset}
    run, cluster = RunOptions(), ClusterOptions()
    for name in ("cpus_per_trial", "max_failures", "coldsecs", "wandb_project", "fail_fast"):
        assert getattr(run, name) == flags.DEFAULT[name]
    for name in ("usage_threshold", "waitsecs"):
        assert getattr(cluster, name) == flags.DEFAULT[name]


def test_defaults_are_fresh_copies():
    a = flags.defaults("axis")
    a["models"].append("x")
    a["norm_grid"]["y"] = 1
    assert flags.defaults("axis")["models"] == ["derpp", "er_ace"] and flags.defaults("axis")["norm_grid"] == {}


def test_a_preset_may_set_every_preset_key_and_no_command(tmp_path):
    values = {"models": ["er"], "num_seeds": 2, "coldsecs": 1, "nowandb": True, "name": "x", "data_root": "d"}
    assert set(values) <= set(flags.PRESET_KEYS)
    for command in flags.COMMANDS:
        assert command not in flags.PRESET_KEYS
    preset = tmp_path / "p.yaml"
    preset.write_text("dry_run: true\n")
    with pytest.raises(Exception, match="unknown key .dry_run."):
        sweep.load_preset(str(preset))


def test_the_readme_documents_every_flag():
    readme = (ROOT / "README.md").read_text()
    missing = [f"--{f.name}" for f in flags.FLAGS if f"`--{f.name}" not in readme]
    assert missing == []


def test_the_readme_states_the_declared_defaults():
    """The README's flag table ("ours" column) and its `--flag` (default X) mentions say what
    orchestrator/flags.py declares, wherever they state a default at all."""
    readme = (ROOT / "README.md").read_text()
    declared = {f.name: f for f in flags.FLAGS if f.default not in (None, False, {})}
    checked = {}
    for row in re.findall(r"^\| (`--.*?) \| (.*?) \|", readme, re.M):
        names, values = row
        sep = " / " if " / " in names else ", "
        names = [n.strip("` ") for n in names.split(sep)]
        values = [v.strip("` ") for v in values.split(sep)]
        if len(names) == len(values):
            checked.update({n.lstrip("-"): v for n, v in zip(names, values)})
    for name, value in re.findall(r"`--(\w+)[^`]*` \(default `?([\w.]+)", readme):
        checked.setdefault(name, value)
    compared = {n: v for n, v in checked.items() if n in declared}
    assert len(compared) >= 10, compared                     # the parse found the table and the prose
    assert {n: v for n, v in compared.items() if v != declared[n].shown()} == {}
