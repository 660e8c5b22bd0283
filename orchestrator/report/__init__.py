"""Sweep results on disk -> trials.csv, summary.csv, paper-style tables, PNG plots, text summary.

Reads `results/<sweep>/<trial_id>/` directories (docs/architecture.md; the file names, the
schema and the validating reader are engine.results', the contract the engine and the ledger share):
  config.json  written when the trial is planned   -> pending until one of the two below exists
  result.json  schema "normsweep.result/2"         -> finished (the only proof a trial is done)
  error.json   {"trial_id", "error", "log_file"}   -> failed
A result.json without config.json (engine run by hand) counts. A result.json that cannot be read
or is not ours is skipped with a warning naming the file; its trial is listed as "corrupt".

Writes, under the output directory (the sweep directory unless told otherwise):
  trials.csv   one row per trial directory: flattened config, status, metrics, runtime
  summary.csv  one row per config over seeds: <metric>_mean, <metric>_std, <metric>_n
  missing.csv  trials that did not finish: trial id, status, error, log file
  tables/<dataset>_<setting>[_task_il_faa|_class_il_ffm].{csv,md}  and  ..._grid.{csv,md}
  tables/<dataset>_<setting>_paired.{csv,md}  every layer minus the baseline, paired by seed
  plots/<dataset>_<setting>_<method>_buf<size>.png, plots/<dataset>_<setting>_final_class_il_faa.png,
  plots/<dataset>_<setting>_paired.png

CLI: python -m orchestrator.report results/<sweep> [--out DIR] [--baseline LAYER]
(exit 2 with one line on bad input). Imports pandas, numpy and (in orchestrator.paired) scipy;
matplotlib is imported inside the plotting functions.

One job a module, in the order build_report runs them:
  load.py       trial directories -> the trials frame (one flat row per trial, any status)
  aggregate.py  summaries over seeds, sections (grid point per cell, paired tables), missing trials
  tables.py     paper-style tables and the CSV/MD files
  plots.py      the PNG plots
  text.py       the terminal summary
  build.py      build_report: the steps above in order
  cli.py        `show` and the command line (__main__.py runs it)
  base.py       what they share: errors, the Report and Section records, cell helpers
"""
from engine.results import SCHEMA
from orchestrator.report.aggregate import build_sections, choose_grid_points, missing_trials, summarize
from orchestrator.report.base import Report, ReportError, ReportWarning, Section
from orchestrator.report.build import build_report
from orchestrator.report.cli import main, show
from orchestrator.report.load import read_trial, scan_sweep
from orchestrator.report.plots import write_plots
from orchestrator.report.tables import format_table, to_markdown, write_files
from orchestrator.report.text import summary_text

__all__ = ["SCHEMA", "Report", "ReportError", "ReportWarning", "Section", "build_report", "build_sections",
           "choose_grid_points", "format_table", "main", "missing_trials", "read_trial", "scan_sweep", "show",
           "summarize", "summary_text", "to_markdown", "write_files", "write_plots"]
