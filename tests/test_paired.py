"""Paired statistics in the report, on hand-made sweeps whose per-seed class-IL FAA is chosen
here; every expected number is computed here with scipy, not read back from orchestrator.paired."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import REPO, fake_run, run_cli, trial_config, write_planned, write_result

import launcher
from orchestrator.report import ReportError, ReportWarning, build_report, summary_text

SEEDS = tuple(range(6))
GRID = ({"kappa": 0.2, "lambd": 0.1, "ada_t0": 1}, {"kappa": 0.4, "lambd": 0.1, "ada_t0": 1})


def noise(rng: np.random.Generator, mean: float, sd: float, n: int = len(SEEDS)) -> np.ndarray:
    """n values with exactly this sample mean and std, so which layer ranks first is fixed."""
    z = rng.normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def fabricate(rng: np.random.Generator) -> dict:
    """(model, buffer) -> {(norm, kappa): per-seed class-IL FAA}; seeds are 0..len-1.

    er/200: large seed-to-seed spread but tbbn is +5 over bn on every seed, +3 over adab2n's shown
    point: a clear winner that unpaired stds hide. derpp/200: tbbn best by mean, but noisy: no
    clear winner. derpp/500: tbbn is bn + 4 exactly (zero spread). er/500: one seed. er/1000: no bn.
    """
    bn = 50 + rng.normal(0, 10, len(SEEDS))
    quarter = np.round(bn * 4) / 4  # exact binary fractions: bn + 4 - bn == 4 exactly
    return {
        ("er", 200): {("bn", None): bn, ("tbbn", None): bn + noise(rng, 5, 0.5),
                      ("adab2n", 0.2): bn + noise(rng, 2, 0.5), ("adab2n", 0.4): bn + noise(rng, -3, 0.5)},
        ("derpp", 200): {("bn", None): bn, ("tbbn", None): bn + noise(rng, 3, 10),
                         ("adab2n", 0.2): bn + noise(rng, 1, 10), ("adab2n", 0.4): bn + noise(rng, -1, 1)},
        ("derpp", 500): {("bn", None): quarter, ("tbbn", None): quarter + 4},
        ("er", 500): {("bn", None): bn[:1], ("tbbn", None): bn[:1] + 1},
        ("er", 1000): {("tbbn", None): bn, ("adab2n", 0.2): bn + noise(rng, 1, 2)},
    }


def write_sweep(root, faa: dict, rng: np.random.Generator) -> None:
    for (model, size), layers in faa.items():
        for (norm, kappa), values in layers.items():
            opts = next(p for p in GRID if p["kappa"] == kappa) if norm == "adab2n" else {}
            for seed, v in enumerate(values):
                cfg = trial_config(method=model, norm=norm, buffer_size=size, seed=seed, norm_args=opts)
                tid = f"{model}-{size}-{norm}-{kappa}-s{seed}"
                acc, metrics = fake_run(rng, 50)
                metrics["class_il"]["faa"] = float(v)
                write_result(root / tid, tid, cfg, acc, metrics)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("paired_sweep")
    faa = fabricate(rng)
    write_sweep(root, faa, rng)
    return root, faa


@pytest.fixture(scope="module")
def built(sweep):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)  # nothing here is skipped
        return build_report(sweep[0], keep_figures=True)


def paired_csv(rep) -> pd.DataFrame:
    return pd.read_csv(rep.out_dir / "tables" / "seq-digits_online_paired.csv").set_index(
        ["method", "buffer_size", "norm"])


def shown(layers: dict, norm: str) -> np.ndarray:
    """The values the table shows for a layer: its grid point with the best mean."""
    return max((v for (n, _), v in layers.items() if n == norm), key=np.mean)


def brute_force_seeds(sd: float, delta=2.0, power=0.8, alpha=0.05) -> int:
    """The smallest n from 2 up whose two-sided paired t-test power reaches `power`."""
    n = 2
    while True:
        df, nc = n - 1, delta * math.sqrt(n) / sd
        crit = stats.t.ppf(1 - alpha / 2, df)
        if stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) >= power:
            return n
        n += 1


# ---- the paired table ---------------------------------------------------------------------

def test_paired_numbers_match_scipy(built, sweep):
    table = paired_csv(built)
    faa = sweep[1]
    for model, size in (("er", 200), ("derpp", 200)):
        layers = faa[(model, size)]
        for norm in ("tbbn", "adab2n"):
            a, b = shown(layers, norm), layers[("bn", None)]
            d = a - b
            n, sd = len(d), np.std(d, ddof=1)
            half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
            row = table.loc[(model, size, norm)]
            assert row["baseline"] == "bn" and row["n"] == 6
            assert row["mean_diff"] == pytest.approx(d.mean())
            assert row["sd_diff"] == pytest.approx(sd)
            assert row["ci_low"] == pytest.approx(d.mean() - half)
            assert row["ci_high"] == pytest.approx(d.mean() + half)
            assert row["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
            assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
            assert bool(row["significant"]) == (d.mean() - half > 0 or d.mean() + half < 0)
            assert row["seeds_for_2pt"] == brute_force_seeds(sd), (model, size, norm)
    # er/200 tbbn is +5 +- 0.5 on every seed: significant; derpp/200's tbbn (+3 +- 10) is not
    assert table.loc[("er", 200, "tbbn"), "significant"]
    assert not table.loc[("derpp", 200, "tbbn"), "significant"]
    # the gridded layer is paired at the point the table shows, and says among how many
    assert table.loc[("er", 200, "adab2n"), "norm_options"].startswith("ada_t0=1, kappa=0.2")
    assert table.loc[("er", 200, "adab2n"), "grid_points"] == 2


def test_small_zero_spread_and_missing_baseline_rows(built, sweep):
    table = paired_csv(built)
    zero = table.loc[("derpp", 500, "tbbn")]
    assert zero["n"] == 6 and zero["mean_diff"] == 4 and zero["sd_diff"] == 0
    assert zero["ci_low"] == zero["ci_high"] == 4
    assert np.isnan(zero["p_t"]) and not zero["significant"] and "same amount" in zero["note"]
    one = table.loc[("er", 500, "tbbn")]
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(1)
    assert np.isnan(one["ci_low"]) and np.isnan(one["p_t"]) and np.isnan(one["seeds_for_2pt"])
    assert not one["significant"] and "no interval" in one["note"]
    nobase = table.loc[("er", 1000, "adab2n")]
    assert nobase["n"] == 0 and np.isnan(nobase["mean_diff"]) and nobase["note"] == "no bn in this row"
    # no Wilcoxon below 6 pairs
    assert np.isnan(table.loc[("er", 500, "tbbn"), "p_wilcoxon"])


def test_paired_markdown_marks_intervals_excluding_zero(built, sweep):
    md = (built.out_dir / "tables" / "seq-digits_online_paired.md").read_text(encoding="utf-8")
    table = paired_csv(built)
    lines = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in md.splitlines()
             if line.startswith("| ") and "---" not in line}
    sig = table.loc[("er", 200, "tbbn")]
    assert f"**{sig['mean_diff']:+.2f}**" in lines[("er", "200", "tbbn")]
    assert f"**[{sig['ci_low']:+.2f}, {sig['ci_high']:+.2f}]**" in lines[("er", "200", "tbbn")]
    noisy = table.loc[("derpp", 200, "tbbn")]
    assert f"| {noisy['mean_diff']:+.2f} |" in lines[("derpp", "200", "tbbn")]
    assert "**" not in lines[("derpp", "200", "tbbn")]
    assert ("er", "200", "adab2n (ada_t0=1, kappa=0.2, lambd=0.1) †") in lines
    # per row, the seeds a 2-point difference needs at the row's largest paired spread
    worst = table.loc[("derpp", 200)]["sd_diff"].max()
    assert (f"derpp / 200: 6 paired seeds; a 2-point difference at 80% power needs "
            f"{brute_force_seeds(worst)} seeds") in md
    assert "er / 500: fewer than 2 paired seeds" in md


def test_main_tables_bold_only_a_significant_winner(built):
    md = (built.out_dir / "tables" / "seq-digits_online.md").read_text(encoding="utf-8")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in md.splitlines()
            if line.startswith("| ") and "---" not in line}
    clear = rows[("er", "200")]
    assert clear.count("**") == 2 and clear.rstrip(" |").endswith("tbbn")
    tbbn_cell = clear.split("|")[-3].strip()  # columns: model, buffer, bn, adab2n, tbbn, winner
    assert tbbn_cell.startswith("**") and tbbn_cell.endswith("**")
    for row in (("derpp", "200"), ("derpp", "500"), ("er", "1000")):
        assert "**" not in rows[row] and "no clear winner" in rows[row], row
    assert "runner-up" in md
    text = summary_text(built)
    assert "no clear winner" in text and "Paired by seed" in text and "needs" in text


def test_paired_plot_shows_each_interval(built, sweep):
    path = built.out_dir / "plots" / "seq-digits_online_paired.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    ax = built.figures[path].axes[0]
    table = paired_csv(built).reset_index()
    shown_rows = table[table["n"] > 0]
    assert len(ax.get_yticklabels()) == len(shown_rows)
    # one error bar per comparison, top to bottom in table order: point = mean, caps = the CI
    bars = sorted(ax.containers, key=lambda c: -c.lines[0].get_ydata()[0])
    np.testing.assert_allclose([b.lines[0].get_xdata()[0] for b in bars], shown_rows["mean_diff"])
    caps = np.array([[cap.get_xdata()[0] for cap in b.lines[1]] for b in bars])
    lo = shown_rows["ci_low"].fillna(shown_rows["mean_diff"])  # fewer than 2 seeds: no bar
    hi = shown_rows["ci_high"].fillna(shown_rows["mean_diff"])
    np.testing.assert_allclose(caps, np.column_stack([lo, hi]))


def test_power_for_known_spreads():
    from orchestrator.paired import seeds_for_power

    for sd in (0.5, 2.0, 5.0, 14.7):
        assert seeds_for_power(sd) == brute_force_seeds(sd), sd
    assert seeds_for_power(float("nan")) is None


# ---- --baseline ---------------------------------------------------------------------------

def test_baseline_option_changes_what_is_subtracted(sweep, tmp_path):
    proc = run_cli(str(sweep[0]), "--out", str(tmp_path), "--no-plots", "--baseline", "TBBN")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "tables" / "seq-digits_online_paired.csv")
    assert set(table["baseline"]) == {"tbbn"} and set(table["norm"]) == {"bn", "adab2n"}
    layers = sweep[1][("er", 1000)]
    row = table[(table["method"] == "er") & (table["buffer_size"] == 1000)].iloc[0]
    d = layers[("adab2n", 0.2)] - layers[("tbbn", None)]
    assert row["n"] == 6 and row["mean_diff"] == pytest.approx(d.mean())


def test_baseline_not_in_the_sweep_is_one_line_exit_2(sweep, tmp_path):
    with pytest.raises(ReportError, match="'gn' is not a layer of this sweep; layers: adab2n, bn, tbbn"):
        build_report(sweep[0], tmp_path, plots=False, baseline="gn")
    proc = run_cli(str(sweep[0]), "--out", str(tmp_path), "--baseline", "gn")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "gn" in proc.stderr


def test_launcher_passes_baseline_and_checks_it_before_starting(sweep, tmp_path, capsys):
    shutil.copytree(sweep[0], tmp_path / "copy")
    rc = launcher.main(["--report_only", "--results_dir", str(tmp_path), "--name", "copy",
                        "--baseline", "tbbn"])
    assert rc == 0
    table = pd.read_csv(tmp_path / "copy" / "tables" / "seq-digits_online_paired.csv")
    assert set(table["baseline"]) == {"tbbn"}
    capsys.readouterr()
    rc = launcher.main(["--dry_run", "--results_dir", str(tmp_path), "--datasets", "seq-digits",
                        "--methods", "bn", "tbbn", "--baseline", "gn"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--baseline 'gn' is not among --methods: bn, tbbn" in err


# ---- warnings are one clean line (issue 14) -----------------------------------------------

def test_report_only_warns_one_line_per_skipped_file(tmp_path):
    rng = np.random.default_rng(0)
    sweep = tmp_path / "s"
    cfg = trial_config()
    write_result(sweep / "ok", "ok", cfg, *fake_run(rng, 50))
    write_planned(sweep / "bad", "bad", cfg)
    (sweep / "bad" / "result.json").write_text('{"schema": "normsweep.result/1", "trial_')
    proc = subprocess.run([sys.executable, "launcher.py", "--report_only", "--results_dir",
                           str(tmp_path), "--name", "s"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: skipping {sweep / 'bad' / 'result.json'}: not valid JSON "
        "(Unterminated string starting at: line 1 column 34 (char 33))"]


def test_the_bf16_parity_benchmark_pairs_by_cell_and_seed_and_pools_every_cell():
    """benchmarks/bf16_parity.py: differences per (setting, method, layer) cell and pooled, each
    the t interval scipy gives for those pairs; a seed only one side finished drops out."""
    from benchmarks.bf16_parity import rows

    rng = np.random.default_rng(3)
    index = pd.MultiIndex.from_product([["online"], ["derpp", "er_ace"], ["bn", "tbbn"], range(5)],
                                       names=["setting", "method", "norm", "seed"])
    fp32 = pd.Series(rng.uniform(40, 60, len(index)), index=index)
    bf16 = (fp32 + rng.normal(0.5, 1.0, len(index))).drop(("online", "derpp", "bn", 4))
    out = {(r["setting"], r["method"], r["norm"]): r for r in rows(bf16, fp32)}
    assert len(out) == 4 + 1 + 1 and out[("online", "derpp", "bn")]["n"] == 4
    cell = ("online", "er_ace", "tbbn")
    for key, d in [(cell, bf16.loc[cell] - fp32.loc[cell]), (("online", "all", "all"), (bf16 - fp32).dropna()),
                   (("all", "all", "all"), (bf16 - fp32).dropna())]:
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        r = out[key]
        assert r["n"] == len(d) and r["mean_diff"] == pytest.approx(d.mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
        assert r["within_2"] == (-2 <= d.mean() - half and d.mean() + half <= 2 and d.mean() - half <= 0)
