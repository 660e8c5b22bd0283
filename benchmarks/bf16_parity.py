"""Accuracy parity of bf16 against fp32 (issue 17 point 3), paired by seed, through the launcher.

    python benchmarks/bf16_parity.py [--seeds 10] [--results_dir results/bf16_parity]
                                     [--settings online offline] [--control]

Runs seq-digits online (DER++, ER-ACE; reservoir buffer 200) and offline (finetune, LUCIR;
herding, 100 exemplars) x BN, TBBN, AdaB2N x seeds, once with `--precision fp32` and once with
`--precision bf16`: one launcher sweep per setting and precision, so a rerun resumes and runs
nothing twice. Then, per (setting, method, layer) cell, per setting and over everything, the
paired difference bf16 - fp32 in class-IL FAA with its 95% t interval (orchestrator/paired.py,
the report's own test). Target: the interval within +-2 points and containing 0.

`--control` also runs fp32 with 2 threads per trial: the same arithmetic summed in another order.
Its difference from the 1-thread fp32 run is the spread that rounding alone causes in these
protocols, against which the bf16 spread is to be read. Results go to benchmarks/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.measure import host  # noqa: E402
from orchestrator import paired, report  # noqa: E402

METRIC = "class_il_faa"
BOUND = 2.0
SETTINGS = {   # setting -> launcher flags (besides seeds, precision and names)
    "online": ["--models", "derpp", "er_ace", "--buffer_sizes", "200"],
    "offline": ["--models", "finetune", "lucir", "--buffer_mode", "herding", "--buffer_sizes", "100"],
}
COMMON = ["--datasets", "seq-digits", "--methods", "bn", "tbbn", "adab2n",
          "--norm_grid", "adab2n:kappa=0.4,lambd=0.1,ada_t0=1", "--nowandb", "--yes"]
RUNS = {"fp32": ["--precision", "fp32"], "bf16": ["--precision", "bf16"],
        "fp32_2threads": ["--precision", "fp32", "--cpus_per_trial", "2"]}


def sweep(setting: str, run: str, seeds: int, results_dir: Path) -> pd.DataFrame:
    """Run (or resume) one sweep and return its finished trials, indexed by cell and seed."""
    name = f"parity_{setting}_{run}"
    cmd = [sys.executable, str(ROOT / "launcher.py"), "--setting", setting, *SETTINGS[setting], *COMMON,
           *RUNS[run], "--num_seeds", str(seeds), "--name", name, "--results_dir", str(results_dir)]
    print("$", " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc not in (0, 1):   # 1: some trials failed; pairing drops their seeds and says so
        raise SystemExit(f"{name}: the launcher exited {rc}")
    trials = report.scan_sweep(results_dir / name)
    done = trials[trials["status"] == "finished"].assign(setting=setting)
    return done.set_index(["setting", "method", "norm", "seed"])[METRIC]


def rows(a: pd.Series, b: pd.Series) -> list[dict]:
    """a - b per cell, per setting and over all: the Paired fields and whether the target holds."""
    levels = ("setting", "method", "norm")
    groups = [dict(zip(levels, cell)) for cell in a.index.droplevel("seed").unique()]
    groups += [{"setting": s} for s in a.index.unique("setting")] + [{}]
    out = []
    for group in groups:
        keep = pd.Series(True, index=a.index)
        for level, value in group.items():
            keep &= a.index.get_level_values(level) == value
        r = paired.compare(a[keep], b)   # aligned on (setting, method, norm, seed)
        holds = r.n > 1 and -BOUND <= r.ci_low and r.ci_high <= BOUND and r.ci_low <= 0 <= r.ci_high
        out.append(dict({lv: group.get(lv, "all") for lv in levels}, n=r.n,
                        fp32=float(b.reindex(a[keep].index).mean()), other=float(a[keep].mean()),
                        mean_diff=r.mean_diff, sd_diff=r.sd_diff, ci_low=r.ci_low, ci_high=r.ci_high,
                        p_t=r.p_t, within_2=holds))
    return out


def table(diffs: list[dict], other: str) -> str:
    head = (f"| setting | method | layer | pairs | fp32 FAA | {other} FAA | {other} - fp32 | sd | 95% CI | p (t) "
            "| within +-2, contains 0 |")
    lines = [head, "|" + "---|" * 11]
    for d in diffs:
        lines.append(f"| {d['setting']} | {d['method']} | {d['norm']} | {d['n']} | {d['fp32']:.1f} | "
                     f"{d['other']:.1f} | {d['mean_diff']:+.2f} | {d['sd_diff']:.2f} | "
                     f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | {d['p_t']:.2f} | "
                     f"{'yes' if d['within_2'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per cell (issue: at least 10)")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["online", "offline"])
    parser.add_argument("--results_dir", type=Path, default=ROOT / "results" / "bf16_parity",
                        help="where the sweeps go; rerunning resumes them")
    parser.add_argument("--control", action="store_true",
                        help="also fp32 with 2 threads per trial: the spread rounding alone causes")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a paired interval needs two pairs)")

    runs = ["fp32", "bf16"] + (["fp32_2threads"] if args.control else [])
    faa = {run: pd.concat([sweep(s, run, args.seeds, args.results_dir) for s in args.settings]) for run in runs}
    print(f"\nhost: {host()}")
    print(f"\nclass-IL FAA, bf16 - fp32, paired by seed ({args.seeds} seeds a cell)\n")
    print(table(rows(faa["bf16"], faa["fp32"]), "bf16"))
    if args.control:
        print("\ncontrol: fp32 at 2 threads - fp32 at 1 thread, paired by seed\n")
        print(table(rows(faa["fp32_2threads"], faa["fp32"]), "fp32 2 thr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
