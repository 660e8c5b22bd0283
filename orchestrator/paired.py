"""Paired statistics between normalization layers: pure functions on the report's DataFrames.

Trials of one table row (dataset, setting, method, buffer, other config) share seeds, and a seed
fixes the class order and the initial weights' draw, so layer A and layer B on seed s saw the
same task sequence. Differences per seed remove the seed-to-seed spread that a `mean ± std`
table carries, and a paired t-test on them says whether a difference is more than noise.

A gridded layer (AdaB2N's κ×λ×t0) is paired at the point the table shows, which was chosen on
the same test metric: its difference is optimistic and its p-value does not correct for that
choice (`grid_points` says among how many it was picked). Intervals and p-values are per
comparison, with no multiple-comparison correction.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05          # two-sided: 95% intervals
POWER = 0.8
DETECT = 2.0          # points of class-IL FAA the power question asks about
# Below 6 pairs the two-sided exact signed-rank test cannot reach p < 0.05 (n=5: p >= 2/2^5).
WILCOXON_MIN_N = 6
NAN = float("nan")


@dataclass(frozen=True)
class Paired:
    """Layer minus baseline over the seeds both finished."""
    n: int
    mean_diff: float = NAN
    sd_diff: float = NAN
    ci_low: float = NAN
    ci_high: float = NAN
    p_t: float = NAN
    p_wilcoxon: float = NAN
    note: str = ""

    @property
    def significant(self) -> bool:
        """The 95% t interval excludes 0 (same as p_t < 0.05); never with zero spread."""
        return self.sd_diff > 0 and (self.ci_low > 0 or self.ci_high < 0)


def seed_values(trials: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Finished trials' metrics indexed by (_key, seed): what pairing aligns on."""
    done = trials[trials["status"] == "finished"]
    return done.groupby(["_key", "seed"])[metrics].mean()


def compare(a: pd.Series, b: pd.Series) -> Paired:
    """a - b paired on the index (seed); seeds only one side finished drop out."""
    d = (a - b).dropna()
    n = len(d)
    if n == 0:
        return Paired(0, note="no shared seed")
    mean = float(d.mean())
    if n == 1:
        return Paired(1, mean, note="one shared seed: no interval")
    sd = float(d.std(ddof=1))
    if sd == 0:
        return Paired(n, mean, 0.0, mean, mean, note="every seed differs by the same amount: no test")
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    a, b = a[d.index], b[d.index]
    p_w = float(stats.wilcoxon(a, b).pvalue) if n >= WILCOXON_MIN_N else NAN
    return Paired(n, mean, sd, mean - half, mean + half, float(stats.ttest_rel(a, b).pvalue), p_w)


def seeds_for_power(sd: float, delta: float = DETECT, power: float = POWER,
                    alpha: float = ALPHA) -> int | None:
    """Fewest seeds for which a two-sided paired t-test at `alpha` detects a true mean difference
    `delta` with probability `power`, when paired differences have std `sd`. None: sd unknown.

    Power at n: P(|T| > t_crit) with T ~ noncentral t(n-1, delta*sqrt(n)/sd); it grows with n,
    so start at the normal approximation and walk to the smallest n that reaches it.
    """
    if not np.isfinite(sd):
        return None
    if sd == 0:
        return 2

    def reached(n: int) -> bool:
        df, nc = n - 1, delta * math.sqrt(n) / sd
        crit = stats.t.ppf(1 - alpha / 2, df)
        return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) >= power

    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil((z * sd / delta) ** 2))
    while n > 2 and reached(n - 1):
        n -= 1
    while not reached(n):
        n += 1
    return n


def _seeds(values: pd.DataFrame, key: str, metric: str) -> pd.Series:
    return values.xs(key, level="_key")[metric]


def paired_table(cells: pd.DataFrame, row_keys: list[str], values: pd.DataFrame,
                 baseline: str, metric: str) -> pd.DataFrame:
    """One row per table row x layer other than the baseline: the Paired fields, `significant`,
    and `seeds_for_2pt` (seeds for a DETECT-point difference at POWER, given this sd_diff)."""
    rows = []
    for row_vals, group in cells.groupby(row_keys, dropna=False, sort=False):
        keys = dict(zip(group["norm"], group["_key"]))
        for cell in group.sort_values("norm").to_dict("records"):
            if cell["norm"] == baseline:
                continue
            p = (compare(_seeds(values, cell["_key"], metric), _seeds(values, keys[baseline], metric))
                 if baseline in keys else Paired(0, note=f"no {baseline} in this row"))
            rows.append({**dict(zip(row_keys, _as_tuple(row_vals))), "norm": cell["norm"],
                         "norm_options": cell["norm_options"], "grid_points": cell["grid_points"],
                         "baseline": baseline, **asdict(p), "significant": p.significant,
                         "seeds_for_2pt": seeds_for_power(p.sd_diff)})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["seeds_for_2pt"] = table["seeds_for_2pt"].astype("Int64")
    return table


def clear_winner(group: pd.DataFrame, values: pd.DataFrame, metric: str,
                 higher_better: bool) -> str | None:
    """The best layer of one table row (by mean) when it beats every other layer significantly,
    the runner-up included, each paired over the seeds both finished; None otherwise (a tie, one
    layer, or some difference the seeds cannot tell from noise). Beating the runner-up alone is
    not enough: a noisier third layer may still not be shown worse."""
    ranked = group.dropna(subset=[f"{metric}_mean"]).sort_values(
        f"{metric}_mean", ascending=not higher_better, kind="stable")
    if len(ranked) < 2 or ranked[f"{metric}_mean"].iloc[0] == ranked[f"{metric}_mean"].iloc[1]:
        return None
    best = ranked.iloc[0]
    for _, other in ranked.iloc[1:].iterrows():
        p = compare(_seeds(values, best["_key"], metric), _seeds(values, other["_key"], metric))
        if not (p.significant and (p.mean_diff > 0) == higher_better):
            return None
    return str(best["norm"])


# ---- presenting ---------------------------------------------------------------------------

def display_frame(table: pd.DataFrame, row_keys: list[str], bold: bool = True) -> pd.DataFrame:
    """Text cells: differences whose interval excludes 0 in bold (.md) or starred (terminal)."""
    def fmt(v: float, spec: str) -> str:
        return "" if not np.isfinite(v) else format(v, spec)

    out = table[[*row_keys, "norm", "baseline", "n"]].map(_text)
    out["norm"] = [f"{r.norm} ({r.norm_options}) †" if r.grid_points > 1 else r.norm
                    for r in table.itertuples(index=False)]
    diff = table["mean_diff"].map(lambda v: fmt(v, "+.2f"))
    ci = [f"[{fmt(lo, '+.2f')}, {fmt(hi, '+.2f')}]" if np.isfinite(lo) else ""
          for lo, hi in zip(table["ci_low"], table["ci_high"])]
    sig = table["significant"].to_numpy()
    out["mean diff"] = [(f"**{d}**" if bold else f"{d} *") if s else d for d, s in zip(diff, sig)]
    out["95% CI"] = [f"**{c}**" if s and bold else c for c, s in zip(ci, sig)]
    out["p (t)"] = table["p_t"].map(lambda v: fmt(v, ".3g"))
    out["p (Wilcoxon)"] = table["p_wilcoxon"].map(lambda v: fmt(v, ".3g"))
    out[f"seeds for {DETECT:g} pts"] = table["seeds_for_2pt"].map(lambda v: "" if pd.isna(v) else str(v))
    out["note"] = table["note"]
    return out


def power_lines(table: pd.DataFrame, row_keys: list[str]) -> list[str]:
    """Per table row: seeds now, and seeds for a DETECT-point difference at POWER given the
    largest paired spread in the row (enough for every comparison in it)."""
    lines = []
    for row_vals, group in table.groupby(row_keys, dropna=False, sort=False):
        name = " / ".join(_text(v) for v in _as_tuple(row_vals))
        spread = group.dropna(subset=["sd_diff"])
        if spread.empty:
            lines.append(f"{name}: fewer than 2 paired seeds, no spread to plan from")
            continue
        worst = spread.loc[spread["sd_diff"].idxmax()]
        lines.append(f"{name}: {int(group['n'].max())} paired seeds; a {DETECT:g}-point difference "
                     f"at {POWER:.0%} power needs {worst['seeds_for_2pt']} seeds (largest paired "
                     f"sd {worst['sd_diff']:.2f}, {worst['norm']} - {worst['baseline']})")
    return lines


def plot_differences(ax, table: pd.DataFrame, row_keys: list[str]) -> None:  # noqa: ANN001
    """Each comparison's mean difference with its 95% interval (none below 2 seeds); red where
    the interval excludes 0."""
    shown = table[table["n"] > 0]
    y = np.arange(len(shown))[::-1]
    lo = (shown["mean_diff"] - shown["ci_low"]).fillna(0).to_numpy()
    hi = (shown["ci_high"] - shown["mean_diff"]).fillna(0).to_numpy()
    colors = np.where(shown["significant"], "tab:red", "tab:blue")
    for yi, m, l, h, c in zip(y, shown["mean_diff"], lo, hi, colors):
        ax.errorbar(m, yi, xerr=[[l], [h]], fmt="o", color=c, capsize=3)
    labels = [" / ".join(_text(r[k]) for k in row_keys) + f": {r['norm']} - {r['baseline']} (n={r['n']})"
              for _, r in shown.iterrows()]
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("class-IL FAA difference (points), mean over shared seeds ± 95% CI")
    ax.grid(axis="x", alpha=0.3)


def _as_tuple(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _text(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
