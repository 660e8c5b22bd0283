"""Sweeps written before a refactor resume after it: trial ids and the result contract hold.

tests/data/sweep_2026_12_04 is a sweep directory written by the code of 2026-12-04 (config.json
and result.json of four tiny trials, schema 1, where the CL method was the field `model`). A
change that renames a trial field, changes the id hash or tightens the result contract makes the
launcher rerun these trials, and this test fails.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from engine.results import SCHEMA, read_result
from orchestrator import report, sweep
from orchestrator.ledger import SweepDir

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "sweep_2026_12_04"
FLAGS = ["--datasets", "seq-synth", "--models", "sgd", "er", "--methods", "bn", "adab2n", "--num_seeds", "1",
         "--buffer_sizes", "20", "--data_args", "seq-synth:train_per_class=8,test_per_class=4,image_size=8",
         "--norm_grid", "adab2n:kappa=0.4,lambd=0.1,ada_t0=1"]
IDS = {"cbc9f621d649", "93d94b66806f", "75f379c7ab7d", "c7ef40377adb"}


def test_the_grid_expands_to_the_ids_the_old_sweep_has():
    trials = sweep.expand(sweep.spec_from_flags(dict(
        datasets=["seq-synth"], models=["sgd", "er"], methods=["bn", "adab2n"], num_seeds=1, buffer_sizes=[20],
        data_args={"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}},
        norm_grid=["adab2n:kappa=0.4,lambd=0.1,ada_t0=1"])))
    assert {t.trial_id for t in trials} == IDS == {p.name for p in FIXTURE.iterdir()}
    ledger = SweepDir(FIXTURE.parent, FIXTURE.name)
    assert all(ledger.is_done(t) for t in IDS)


def test_the_launcher_resumes_the_old_sweep_with_nothing_to_run(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / FIXTURE.name)
    run = subprocess.run([sys.executable, str(ROOT / "launcher.py"), *FLAGS, "--nowandb", "--yes",
                          "--name", FIXTURE.name, "--results_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "4 already finished, 0 to run" in run.stdout
    assert (tmp_path / FIXTURE.name / "summary.csv").is_file()


def test_the_old_results_read_in_todays_names(tmp_path):
    """Schema 1's `model` is today's `method`, in the result, trials.csv and the tables; a pending
    trial's config.json (no result yet) is read the same way."""
    old = FIXTURE / "cbc9f621d649"
    assert '"model": "sgd"' in (old / "result.json").read_text()       # the fixture is schema 1
    result = read_result(old)
    assert result["schema"] == SCHEMA and result["config"]["method"] == "sgd" and "model" not in result["config"]
    shutil.copytree(FIXTURE, tmp_path / FIXTURE.name)
    (tmp_path / FIXTURE.name / "93d94b66806f" / "result.json").unlink()   # now a planned, pending trial
    rep = report.build_report(tmp_path / FIXTURE.name)
    trials = pd.read_csv(rep.out_dir / "trials.csv")
    assert "model" not in trials.columns
    assert dict(zip(trials["trial_id"], trials["method"])) == {
        "cbc9f621d649": "sgd", "93d94b66806f": "er", "75f379c7ab7d": "sgd", "c7ef40377adb": "er"}
    assert trials.set_index("trial_id").loc["93d94b66806f", "status"] == "pending"
    paired = pd.read_csv(rep.out_dir / "tables" / "seq-synth_online_paired.csv")
    assert {"method", "norm"} <= set(paired.columns) and "layer" not in paired.columns
