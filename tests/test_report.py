"""orchestrator.report on hand-made sweeps: expected numbers are computed here, with numpy."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.results import SCHEMA
from orchestrator.report import ReportError, ReportWarning, build_report, summary_text

REPO = Path(__file__).resolve().parents[1]
N_TASKS = 3
SEEDS = (0, 1, 2)
ADAB2N_GRID = ({"kappa": 0.2, "lambd": 0.1, "ada_t0": 5}, {"kappa": 0.4, "lambd": 0.1, "ada_t0": 5})
METHOD_ARGS = {"derpp": {"alpha": 0.1, "beta": 0.5}, "er": {}}
ROWS = (("derpp", 200), ("derpp", 500), ("er", 200))
# The grid point that must win per row: derpp rows get a +10 bonus at kappa 0.4, er at kappa 0.2.
BONUS_KAPPA = {"derpp": 0.4, "er": 0.2}


# ---- fabricating a sweep ------------------------------------------------------------------

def trial_config(dataset="seq-digits", setting="online", method="er", norm="bn", buffer_size=200,
                 seed=0, norm_args=None, method_args=None) -> dict:
    """Every TrialConfig field, resolved, as result.json stores it."""
    return {"dataset": dataset, "method": method, "norm": norm, "buffer_mode": "reservoir",
            "buffer_size": buffer_size, "seed": seed, "setting": setting, "epochs": 1, "bs": 10,
            "minibatch_size": 10, "lr": 0.03, "n_tasks": N_TASKS, "nc_first_task": None,
            "backbone": "resnet18-reduced", "momentum": 0.0, "weight_decay": 0.0,
            "lr_milestones": [], "lr_gamma": 1.0, "selection": "last",
            "norm_args": dict(norm_args or {}), "method_args": dict(method_args or {}),
            "data_args": {}, "device": "cpu", "data_root": "data"}


def write_result(trial_dir: Path, trial_id: str, config: dict, acc: dict, metrics: dict) -> dict:
    """A result.json exactly as docs/architecture.md describes it."""
    result = {"schema": SCHEMA, "trial_id": trial_id, "status": "finished",
              "config": config, "metrics": metrics, "acc_matrix": acc,
              "wall_time_s": 12.5, "steps": 180, "steps_per_s": 14.4, "device": "cpu",
              "versions": {"python": "3.11.7", "torch": "2.4.1", "engine": "0.1.0"},
              "started_at": "2026-11-22T10:00:00+00:00", "finished_at": "2026-11-22T10:00:12+00:00"}
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "result.json").write_text(json.dumps(result))
    return result


def write_planned(trial_dir: Path, trial_id: str, config: dict, log_file: str | None = None) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "config.json").write_text(json.dumps(
        {"trial_id": trial_id, "run_name": f"run-{trial_id}", "config": config, "log_file": log_file}))


def fake_run(rng: np.random.Generator, base: float) -> tuple[dict, dict]:
    """Random lower-triangular accuracy matrices around `base` and metrics derived from them."""
    acc, metrics = {}, {}
    for scenario, shift in (("class_il", 0.0), ("task_il", 25.0)):
        rows = [[round(float(min(99.0, base + shift + rng.normal(0, 3))), 2) for _ in range(i + 1)]
                for i in range(N_TASKS)]
        acc[scenario] = rows
        metrics[scenario] = {"faa": float(np.mean(rows[-1])),
                             "caa": float(np.mean([np.mean(r) for r in rows])),
                             "ffm": round(float(rng.uniform(5, 40)), 3),
                             "bwt": round(float(-rng.uniform(5, 40)), 3)}
    return acc, metrics


def norm_settings():
    yield "bn", {}
    yield "tbbn", {}
    for point in ADAB2N_GRID:
        yield "adab2n", point


def label(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """36 planned digits trials + 1 synth one; 3 fail to finish; 2 stray unreadable results.

    Returns (sweep_dir, finished) where finished is a list of (config, result) the report must use.
    """
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(123)
    finished = []
    for model, size in ROWS:
        for norm, opts in norm_settings():
            for seed in SEEDS:
                cfg = trial_config(method=model, norm=norm, buffer_size=size, seed=seed,
                                   norm_args=opts, method_args=METHOD_ARGS[model])
                tid = f"{model}-{size}-{norm}-{opts.get('kappa', 'x')}-s{seed}"
                tdir = root / tid
                base = 40 + (10 if opts.get("kappa") == BONUS_KAPPA[model] else 0) + (5 if norm == "tbbn" else 0)
                acc, metrics = fake_run(rng, base)
                if (model, size, norm, seed) == ("derpp", 200, "bn", 0):
                    finished.append((cfg, write_result(tdir, tid, cfg, acc, metrics)))  # run by hand
                    continue
                write_planned(tdir, tid, cfg, log_file=f"/logs/{tid}.log")
                if (model, size, norm, seed) == ("derpp", 500, "tbbn", 2):
                    (tdir / "error.json").write_text(json.dumps(
                        {"trial_id": tid, "error": "CUDA out of memory", "log_file": f"/logs/{tid}.log"}))
                elif (model, size, norm, seed) == ("er", 200, "bn", 2):
                    pass  # pending
                elif (model, size, norm, seed) == ("er", 200, "tbbn", 1):
                    (tdir / "result.json").write_text('{"schema": "normsweep.result/1", "trial_')
                else:
                    finished.append((cfg, write_result(tdir, tid, cfg, acc, metrics)))
    # A single-seed config in another dataset x setting: std must be empty, the cell a bare mean.
    cfg = trial_config(dataset="seq-synth", setting="offline", method="er", norm="bn", seed=0)
    acc, metrics = fake_run(rng, 50)
    finished.append((cfg, write_result(root / "synth-s0", "synth-s0", cfg, acc, metrics)))
    # Strays: a foreign schema and a result missing its metrics.
    foreign = write_result(root / "foreign", "foreign", cfg, acc, metrics)
    (root / "foreign" / "result.json").write_text(json.dumps({**foreign, "schema": "other.result/2"}))
    partial = {k: v for k, v in foreign.items() if k != "metrics"}
    (root / "no-metrics").mkdir()
    (root / "no-metrics" / "result.json").write_text(json.dumps(partial))
    return root, finished


@pytest.fixture(scope="module")
def built(sweep, tmp_path_factory):
    root, _ = sweep
    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = build_report(root, out, keep_figures=True)
    return rep, [str(w.message) for w in caught if issubclass(w.category, ReportWarning)]


def expected_groups(finished) -> dict[tuple, dict]:
    """(dataset, setting, model, size, norm, kappa) -> per-seed lists of metrics and curves."""
    groups: dict[tuple, dict] = {}
    for cfg, res in finished:
        key = (cfg["dataset"], cfg["setting"], cfg["method"], cfg["buffer_size"], cfg["norm"],
               cfg["norm_args"].get("kappa"))
        g = groups.setdefault(key, {"options": cfg["norm_args"], "metrics": {}, "curves": []})
        for scenario in ("class_il", "task_il"):
            for m, v in res["metrics"][scenario].items():
                g["metrics"].setdefault(f"{scenario}_{m}", []).append(v)
        a = res["acc_matrix"]["class_il"]
        g["curves"].append([sum(a[i][: i + 1]) / (i + 1) for i in range(len(a))])
    return groups


def cell(values: list[float], max_n: int) -> str:
    mean = np.mean(values)
    text = f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {np.std(values, ddof=1):.2f}"
    return text + (f" (n={len(values)})" if len(values) < max_n else "")


def best_kappa(groups, model, size) -> float:
    """The adab2n grid point with the highest mean class-IL FAA, computed here."""
    scores = {p["kappa"]: np.mean(groups[("seq-digits", "online", model, size, "adab2n", p["kappa"])]
                                  ["metrics"]["class_il_faa"]) for p in ADAB2N_GRID}
    return max(scores, key=scores.get)


# ---- trials.csv and missing.csv -------------------------------------------------------------

def test_trials_csv_has_one_row_per_trial_with_status_and_flat_config(built, sweep):
    rep, _ = built
    root, finished = sweep
    trials = pd.read_csv(rep.out_dir / "trials.csv")
    assert len(trials) == 36 + 1 + 2
    assert trials["status"].value_counts().to_dict() == {"finished": 34, "failed": 1, "pending": 1,
                                                         "corrupt": 3}
    for col in ("trial_id", "dataset", "setting", "method", "buffer_mode", "buffer_size", "norm",
                "norm.kappa", "norm.lambd", "norm.ada_t0", "method.alpha", "seed", "epochs", "bs",
                "lr", "class_il_faa", "task_il_ffm", "class_il_bwt", "wall_time_s", "steps_per_s",
                "device", "log_file"):
        assert col in trials.columns, col
    # the hand-run result (no config.json) is used, and values come through untouched
    cfg, res = finished[0]
    row = trials.set_index("trial_id").loc[res["trial_id"]]
    assert row["status"] == "finished" and row["norm"] == "bn" and row["method.alpha"] == 0.1
    assert row["class_il_faa"] == pytest.approx(res["metrics"]["class_il"]["faa"])
    assert row["task_il_bwt"] == pytest.approx(res["metrics"]["task_il"]["bwt"])
    # a gridded trial carries its options as columns
    adab = trials[(trials["norm"] == "adab2n") & (trials["status"] == "finished")]
    assert sorted(adab["norm.kappa"].unique()) == [0.2, 0.4]


def test_missing_lists_failed_pending_corrupt_and_warns_naming_files(built, sweep):
    rep, caught = built
    root, _ = sweep
    missing = pd.read_csv(rep.out_dir / "missing.csv").set_index("trial_id")
    assert set(missing.index) == {"derpp-500-tbbn-x-s2", "er-200-bn-x-s2", "er-200-tbbn-x-s1",
                                  "foreign", "no-metrics"}
    failed = missing.loc["derpp-500-tbbn-x-s2"]
    assert failed["status"] == "failed" and failed["error"] == "CUDA out of memory"
    assert failed["log_file"] == "/logs/derpp-500-tbbn-x-s2.log"
    assert missing.loc["er-200-bn-x-s2", "status"] == "pending"
    assert missing.loc["er-200-tbbn-x-s1", "status"] == "corrupt"
    for name in ("er-200-tbbn-x-s1", "foreign", "no-metrics"):
        path = str(root / name / "result.json")
        assert any(path in msg for msg in caught), (path, caught)
    assert any("schema" in msg for msg in caught) and any("metrics" in msg for msg in caught)
    text = summary_text(rep)
    assert "Not finished (5)" in text and "CUDA out of memory" in text and "er-200-bn-x-s2" in text


# ---- summary.csv --------------------------------------------------------------------------

def test_summary_means_stds_and_n_over_seeds(built, sweep):
    rep, _ = built
    groups = expected_groups(sweep[1])
    summary = pd.read_csv(rep.out_dir / "summary.csv")
    assert len(summary) == len(groups) == 3 * 4 + 1
    for key, g in groups.items():
        dataset, setting, model, size, norm, kappa = key
        sel = ((summary["dataset"] == dataset) & (summary["setting"] == setting)
               & (summary["method"] == model) & (summary["buffer_size"] == size) & (summary["norm"] == norm))
        sel &= summary["norm.kappa"].isna() if kappa is None else summary["norm.kappa"] == kappa
        assert sel.sum() == 1, key
        row = summary[sel].iloc[0]
        for metric, values in g["metrics"].items():
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values)), (key, metric)
            assert row[f"{metric}_n"] == len(values)
            if len(values) > 1:
                assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1)), (key, metric)
            else:
                assert np.isnan(row[f"{metric}_std"])
    assert "seed" not in summary.columns and "data_root" not in summary.columns


def test_summary_single_seed_std_is_an_empty_cell(built):
    rep, _ = built
    with open(rep.out_dir / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["dataset"] == "seq-synth"]
    assert len(rows) == 1
    assert rows[0]["class_il_faa_std"] == "" and rows[0]["class_il_faa_n"] == "1"
    assert rows[0]["class_il_faa_mean"] != ""


# ---- tables -------------------------------------------------------------------------------

@pytest.mark.parametrize("metric,suffix", [("class_il_faa", ""), ("task_il_faa", "_task_il_faa"),
                                           ("class_il_ffm", "_class_il_ffm")])
def test_paper_tables_cells_and_best_grid_point(built, sweep, metric, suffix):
    rep, _ = built
    groups = expected_groups(sweep[1])
    table = pd.read_csv(rep.out_dir / "tables" / f"seq-digits_online{suffix}.csv", dtype=str)
    assert list(table.columns) == ["method", "buffer_size", "bn", "adab2n", "tbbn"]
    assert [tuple(r) for r in table[["method", "buffer_size"]].values] == [
        ("derpp", "200"), ("derpp", "500"), ("er", "200")]
    table = table.set_index(["method", "buffer_size"])
    for model, size in ROWS:
        kappa = best_kappa(groups, model, size)
        assert kappa == BONUS_KAPPA[model]  # the fabricated bonus shows through
        for norm, k in (("bn", None), ("tbbn", None), ("adab2n", kappa)):
            values = groups[("seq-digits", "online", model, size, norm, k)]["metrics"][metric]
            assert table.loc[(model, str(size)), norm] == cell(values, max_n=3), (model, size, norm)


def test_grid_side_table_and_markdown(built, sweep):
    rep, _ = built
    groups = expected_groups(sweep[1])
    grid = pd.read_csv(rep.out_dir / "tables" / "seq-digits_online_grid.csv")
    assert len(grid) == 3 and set(grid["norm"]) == {"adab2n"}
    for row in grid.itertuples(index=False):
        kappa = BONUS_KAPPA[row.method]
        values = groups[("seq-digits", "online", row.method, row.buffer_size, "adab2n", kappa)]
        assert row.norm_options == label({"kappa": kappa, "lambd": 0.1, "ada_t0": 5})
        assert row.grid_points == 2
        assert row.class_il_faa_mean == pytest.approx(np.mean(values["metrics"]["class_il_faa"]))
        assert "test metric" in row.selected_by
    md = (rep.out_dir / "tables" / "seq-digits_online.md").read_text(encoding="utf-8")
    assert md.count("\n| derpp |") == 2 and "†" in md and "test metric" in md
    # the synth table has no grid: no side table; a single seed shows a bare mean
    assert not (rep.out_dir / "tables" / "seq-synth_offline_grid.csv").exists()
    synth = pd.read_csv(rep.out_dir / "tables" / "seq-synth_offline.csv", dtype=str)
    faa = [r["metrics"]["class_il"]["faa"] for c, r in sweep[1] if c["dataset"] == "seq-synth"]
    assert synth.loc[0, "bn"] == f"{faa[0]:.2f}"


# ---- plots --------------------------------------------------------------------------------

def test_plots_one_line_per_layer_with_seed_means(built, sweep):
    rep, _ = built
    groups = expected_groups(sweep[1])
    plots = rep.out_dir / "plots"
    expected_files = {f"seq-digits_online_{m}_buf{s}.png" for m, s in ROWS} | {
        "seq-synth_offline_er_buf200.png", "seq-digits_online_final_class_il_faa.png",
        "seq-synth_offline_final_class_il_faa.png", "seq-digits_online_paired.png"}
    assert {p.name for p in plots.iterdir()} == expected_files
    for name in expected_files:
        data = (plots / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
    for model, size in ROWS:
        kappa = best_kappa(groups, model, size)
        fig = rep.figures[plots / f"seq-digits_online_{model}_buf{size}.png"]
        lines = fig.axes[0].get_lines()
        assert [ln.get_label() for ln in lines] == [
            "bn", f"adab2n ({label({'kappa': kappa, 'lambd': 0.1, 'ada_t0': 5})})", "tbbn"]
        for line, (norm, k) in zip(lines, (("bn", None), ("adab2n", kappa), ("tbbn", None))):
            curves = np.array(groups[("seq-digits", "online", model, size, norm, k)]["curves"])
            np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
            np.testing.assert_allclose(line.get_ydata(), curves.mean(axis=0))
        assert len(fig.axes[0].collections) == 3  # one seed-spread band per layer


def test_bar_chart_heights_are_final_accuracy_means(built, sweep):
    from matplotlib.container import BarContainer

    rep, _ = built
    groups = expected_groups(sweep[1])
    fig = rep.figures[rep.out_dir / "plots" / "seq-digits_online_final_class_il_faa.png"]
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["bn", "adab2n", "tbbn"]
    for bar, norm in zip(bars, ("bn", "adab2n", "tbbn")):
        expected = []
        for model, size in ROWS:
            k = best_kappa(groups, model, size) if norm == "adab2n" else None
            expected.append(np.mean(groups[("seq-digits", "online", model, size, norm, k)]
                                    ["metrics"]["class_il_faa"]))
        np.testing.assert_allclose([p.get_height() for p in bar.patches], expected)


# ---- empty sweeps and the CLI -------------------------------------------------------------

def test_empty_sweep_raises_a_value_error(tmp_path):
    write_planned(tmp_path / "t1", "t1", trial_config())
    with pytest.raises(ReportError, match="no finished trial") as info:
        build_report(tmp_path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(ReportError, match="no such sweep directory"):
        build_report(tmp_path / "nope")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.report", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_empty_sweep_exits_2_with_one_line(tmp_path):
    write_planned(tmp_path / "t1", "t1", trial_config())
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / "error.json").write_text(json.dumps({"trial_id": "t2", "error": "boom",
                                                           "log_file": None}))
    proc = run_cli(str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: no finished trial") and "1 failed, 1 pending" in proc.stderr
    assert not (tmp_path / "trials.csv").exists()


def test_cli_writes_files_and_prints_the_main_table(tmp_path):
    rng = np.random.default_rng(0)
    for norm in ("bn", "tbbn"):
        for seed in (0, 1):
            cfg = trial_config(norm=norm, seed=seed)
            write_planned(tmp_path / f"{norm}{seed}", f"{norm}{seed}", cfg)
            write_result(tmp_path / f"{norm}{seed}", f"{norm}{seed}", cfg, *fake_run(rng, 50))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text("not json")
    proc = run_cli(str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "seq-digits / online" in proc.stdout and "tbbn" in proc.stdout
    assert str(tmp_path / "bad" / "result.json") in proc.stderr  # the skip is visible
    for rel in ("trials.csv", "summary.csv", "missing.csv", "tables/seq-digits_online.csv",
                "tables/seq-digits_online.md", "plots/seq-digits_online_er_buf200.png"):
        assert (tmp_path / rel).stat().st_size > 0, rel


def test_cpu_and_gpu_trials_of_one_config_are_never_averaged_together(tmp_path):
    """The trial id leaves the device out, so the same config can finish on a CPU and a GPU:
    their numbers differ, so they are two summary groups and two table rows (device_kind)."""
    rng = np.random.default_rng(0)
    device = {"cpu": "cpu", "cuda": "cuda:0 (NVIDIA H100 80GB HBM3)"}
    for norm in ("bn", "tbbn"):
        for seed in (0, 1):
            for kind in ("cpu", "cuda"):
                cfg, tid = trial_config(norm=norm, seed=seed), f"{norm}{seed}{kind}"
                result = write_result(tmp_path / tid, tid, cfg, *fake_run(rng, 50 if kind == "cpu" else 80))
                result["device"] = device[kind]
                result["device_uuid"] = {"cpu": None, "cuda": f"GPU-{seed}1f2e3d-aaaa"}[kind]
                (tmp_path / tid / "result.json").write_text(json.dumps(result))
    build_report(tmp_path)
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert sorted(trials["device_kind"].unique()) == ["cpu", "cuda"]
    gpu_rows = trials[trials["device_kind"] == "cuda"]
    assert sorted(gpu_rows["device_uuid"]) == ["GPU-01f2e3d-aaaa"] * 2 + ["GPU-11f2e3d-aaaa"] * 2
    assert trials[trials["device_kind"] == "cpu"]["device_uuid"].isna().all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 4 and set(summary["n_seeds"]) == {2}          # (bn, tbbn) x (cpu, cuda)
    for (norm, kind), group in summary.groupby(["norm", "device_kind"]):
        expected = trials[(trials["norm"] == norm) & (trials["device_kind"] == kind)]["class_il_faa"].mean()
        assert group["class_il_faa_mean"].iloc[0] == pytest.approx(expected)
    table = pd.read_csv(tmp_path / "tables" / "seq-digits_online.csv")
    assert "device_kind" in table.columns and sorted(table["device_kind"]) == ["cpu", "cuda"]


def test_the_report_has_one_result_schema_the_engines_and_needs_no_torch():
    code = ("import sys, orchestrator.report as r, engine.results as e; "
            "assert r.SCHEMA is e.SCHEMA; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
