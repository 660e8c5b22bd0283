"""python -m orchestrator.report results/<sweep> [--out DIR] [--baseline LAYER], and `show`,
what the CLI and the launcher call: build the report, print its summary, warnings as one line."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from orchestrator.report.base import Report, ReportError, ReportWarning
from orchestrator.report.build import build_report
from orchestrator.report.text import summary_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.report",
                                     description="Tables and plots of a sweep's results.")
    parser.add_argument("sweep_dir", type=Path, help="results/<sweep>")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: sweep_dir)")
    parser.add_argument("--no-plots", action="store_true", help="write the CSV/MD files only")
    parser.add_argument("--baseline", metavar="LAYER", default=None,
                        help="the layer the paired tables subtract (default bn)")
    args = parser.parse_args(argv)
    try:
        show(args.sweep_dir, args.out, plots=not args.no_plots, baseline=args.baseline)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def show(sweep_dir: str | Path, out_dir: str | Path | None = None, **options: Any) -> Report:
    """build_report, then print its summary; skipped files print as one 'warning: ...' line each
    (not Python's two-line warning with a source line). What the CLI and the launcher call."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", ReportWarning)
        warnings.showwarning = _show_warning
        rep = build_report(sweep_dir, out_dir, **options)
    print(summary_text(rep))
    return rep


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)
