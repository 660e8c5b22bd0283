"""engine/results.py is the one contract for a trial directory's files: the engine writes through
it, the ledger and the report read through it, and it works without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_report import REPO, fake_run, trial_config

from engine import results
from engine.results import CONFIG_FILE, ERROR_FILE, RESULT_FILE, SCHEMA, load_result, read_result, write_result
from orchestrator.ledger import SweepDir, read_error, record_error
from orchestrator.report import ReportWarning, read_trial, scan_sweep

CONTRACT = REPO / "engine" / "results.py"
FILE_NAMES = {SCHEMA, CONFIG_FILE, RESULT_FILE, ERROR_FILE, results.CHECKPOINT_FILE}
CONTRACT_NAMES = {"SCHEMA", "CONFIG_FILE", "RESULT_FILE", "ERROR_FILE", "CHECKPOINT_FILE", "SCENARIOS",
                  "METRICS", "REQUIRED_RESULT", "REQUIRED_CONFIG", "load_json", "read_json", "load_result",
                  "read_result", "write_result", "_check_metrics", "_check_matrix", "_read_json"}


def a_result(trial_id: str = "t0", **changes) -> dict:
    acc, metrics = fake_run(np.random.default_rng(0), 50)
    return {"schema": SCHEMA, "trial_id": trial_id, "status": "finished", "config": trial_config(),
            "metrics": metrics, "acc_matrix": acc, "device": "cpu", **changes}


def sources(*roots: str) -> list[Path]:
    return [p for root in roots for p in sorted((REPO / root).rglob("*.py")) if p != CONTRACT]


# ---- one copy ----------------------------------------------------------------------------

def test_no_consumer_spells_a_file_name_or_the_schema():
    def literals(path: Path) -> set[str]:
        return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    spelled = {str(p.relative_to(REPO)): literals(p) & FILE_NAMES
               for p in [*sources("orchestrator"), REPO / "launcher.py"]}
    assert {p: names for p, names in spelled.items() if names} == {}, "use engine.results' names"


def test_no_module_but_the_contract_defines_its_names():
    def defined(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                 if isinstance(t, ast.Name)}
        names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        return names | {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    copies = {str(p.relative_to(REPO)): defined(p) & CONTRACT_NAMES
              for p in [*sources("orchestrator", "engine", "benchmarks"), REPO / "launcher.py"]}
    assert {p: names for p, names in copies.items() if names} == {}


def test_the_contract_imports_and_works_without_torch(tmp_path):
    code = f"""
import sys
class NoTorch:                      # any `import torch` now raises ImportError (scipy trips on a
    def find_spec(self, name, path=None, target=None):  # None in sys.modules, so a finder)
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, NoTorch())
from pathlib import Path
from engine import results
from orchestrator import ledger, report
out = Path({str(tmp_path)!r})
results.write_result(out, {a_result()!r})
assert results.read_result(out)["trial_id"] == "t0"
ledger.record_error(out, "t0", "boom", None)
assert ledger.read_error(out)["error"] == "boom"
assert report.read_trial(out)["status"] == "finished"
try:
    results.save_checkpoint(out, {{}})
except ImportError:
    print("no torch", "torch" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no torch False"
    assert not (tmp_path / results.CHECKPOINT_FILE).exists()


# ---- the ledger and the report read the same files the same way ---------------------------

def test_what_the_ledger_records_the_report_reads(tmp_path):
    sweep = SweepDir(tmp_path, "s")
    sweep.record_planned("t1", "run-t1", trial_config(), log_file="/logs/t1.log")
    record_error(sweep.trial_dir("t1"), "t1", "CUDA out\nof memory", "/logs/t1.log")
    sweep.record_planned("t2", "run-t2", trial_config(seed=1), log_file=None)
    assert (sweep.trial_dir("t1") / CONFIG_FILE).exists() and (sweep.trial_dir("t1") / ERROR_FILE).exists()
    trials = scan_sweep(sweep.root).set_index("trial_id")
    failed = trials.loc["t1"]
    assert failed["status"] == "failed" and failed["error"] == read_error(sweep.trial_dir("t1"))["error"]
    assert failed["log_file"] == "/logs/t1.log" and failed["run_name"] == "run-t1"
    assert trials.loc["t2", "status"] == "pending" and sweep.planned("t2")["run_name"] == "run-t2"


@pytest.mark.parametrize("payload,done", [
    (a_result("t1"), True),
    ({k: v for k, v in a_result("t1").items() if k != "metrics"}, False),      # our schema, incomplete
    (a_result("t1", acc_matrix={"class_il": [[50.0]], "task_il": [[]]}), False),
    (a_result("t1", schema="other.result/2"), False),
])
def test_done_for_the_ledger_is_finished_for_the_report(tmp_path, payload, done):
    sweep = SweepDir(tmp_path, "s")
    write_result(sweep.trial_dir("t1"), payload)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = read_trial(sweep.trial_dir("t1"))
    assert sweep.is_done("t1") is done
    assert (read_result(sweep.trial_dir("t1")) is not None) is done
    assert row["status"] == ("finished" if done else "corrupt")
    assert bool([w for w in caught if issubclass(w.category, ReportWarning)]) is not done


def test_an_unreadable_side_file_is_none_for_the_ledger_and_a_warning_for_the_report(tmp_path):
    sweep = SweepDir(tmp_path, "s")
    sweep.trial_dir("t1").mkdir(parents=True)
    (sweep.trial_dir("t1") / ERROR_FILE).write_text("[1, 2]")
    (sweep.trial_dir("t1") / CONFIG_FILE).write_text("{not json")
    assert read_error(sweep.trial_dir("t1")) is None and sweep.planned("t1") is None
    with pytest.warns(ReportWarning) as caught:
        row = read_trial(sweep.trial_dir("t1"))
    assert row["status"] == "failed" and row["error"] == f"unreadable {ERROR_FILE}"
    messages = [str(w.message) for w in caught]
    assert any(f"{ERROR_FILE}: not a JSON object" in m for m in messages)
    assert any(f"{CONFIG_FILE}: not valid JSON" in m for m in messages)


# ---- the engine writes what the contract validates ----------------------------------------

def test_the_engines_result_passes_the_contracts_validation(tmp_path, tiny_cfg):
    from engine.trainer import run_trial

    cfg, sweep = tiny_cfg(n_tasks=2), SweepDir(tmp_path, "s")
    out = sweep.trial_dir(cfg.resolved().trial_id())
    result = run_trial(cfg, out)
    assert load_result(out / RESULT_FILE) == result == read_result(out)
    assert read_trial(out)["status"] == "finished" and sweep.is_done(result["trial_id"])


# ---- the CLI on a sweep written through the ledger and the contract ------------------------

def test_the_report_cli_reads_a_sweep_the_ledger_wrote(tmp_path):
    sweep = SweepDir(tmp_path, "s")
    for norm in ("bn", "tbbn"):
        for seed in (0, 1):
            tid = f"{norm}{seed}"
            sweep.record_planned(tid, f"run-{tid}", trial_config(norm=norm, seed=seed), log_file=None)
            write_result(sweep.trial_dir(tid), a_result(tid, config=trial_config(norm=norm, seed=seed)))
    sweep.record_planned("lost", "run-lost", trial_config(norm="bn", seed=2), log_file="/logs/lost.log")
    record_error(sweep.trial_dir("lost"), "lost", "worker died", "/logs/lost.log")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.report", str(sweep.root), "--out", str(out),
                           "--no-plots"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 finished, 1 failed" in proc.stdout and "worker died" in proc.stdout
    assert (out / "tables" / "seq-digits_online.md").exists() and not (out / "plots").exists()
    bad = subprocess.run([sys.executable, "-m", "orchestrator.report", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr == f"error: no such sweep directory: {tmp_path / 'nope'}\n"
