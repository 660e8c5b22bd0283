"""Screenshots of the Ray dashboard during a small sweep, in headless Chromium (issue 19).

    python benchmarks/dashboard_screenshots.py [--out DIR]

Starts `launcher.py` on a 6-trial seq-digits sweep (its own local Ray, token auth off so the
browser needs no token), and while trials run saves the Jobs, Actors and job pages as PNGs
under DIR, and checks each page's rendered text: the job's Name "normsweep: screenshots", the
trial actors' run names, the job's tasks named `<run name>.train`. Exit 0 when every page shows them; 1 otherwise.
Without Chromium (Debian: `apt-get install chromium`) it says so and exits 0: tests/
test_dashboard.py checks the same through Ray's state API, which those pages read.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "screenshots"
SWEEP = ["--datasets", "seq-digits", "--models", "er", "--methods", "bn", "gn", "--num_seeds", "3",
         "--buffer_sizes", "20", "--nowandb", "--yes", "--name", NAME, "--cpus_per_trial", "1"]
# page (dashboard route; the launcher's driver is a new cluster's first job) -> text it must show
PAGES = {"jobs": f"normsweep: {NAME}", "actors": "seq-digits_", "jobs/01000000": ".train"}


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page(browser: str, url: str, png: Path) -> str:
    """The page's DOM once rendered, and its screenshot."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
              "--virtual-time-budget=10000"]
    subprocess.run([*common, f"--screenshot={png}", url], capture_output=True, timeout=120)
    return subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dashboard_screenshots", help="where the PNGs go")
    args = parser.parse_args()
    browser = chromium()
    if browser is None:
        print("skipped: headless Chromium is not installed (Debian: apt-get install chromium); "
              "tests/test_dashboard.py checks the same through Ray's state API")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = Path(tempfile.mkdtemp(prefix="screens"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    launch = subprocess.Popen([sys.executable, str(ROOT / "launcher.py"), *SWEEP, "--results_dir", str(results),
                               "--dashboard_port", str(free_port())], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url, failed = None, []
    try:
        for line in launch.stdout:
            print(line, end="")
            url = url or (re.search(r"Ray dashboard: (http://\S+)", line) or [None, None])[1]
            if url and list((results / NAME / "_logs").glob("*.txt")):
                break                                   # trials run: the pages have something to show
        time.sleep(5)
        for route, wanted in PAGES.items():
            png = out / f"{route.replace('/', '_')}.png"
            ok = wanted in page(browser, f"{url}/#/{route}", png)
            failed += [] if ok else [route]
            print(f"{'ok' if ok else 'MISSING'} {route}: {wanted!r} ({png})")
    finally:
        for line in launch.stdout:   # the rest of the sweep's output (the pipe must not fill)
            print(line, end="")
        launch.wait(timeout=600)
        shutil.rmtree(results, ignore_errors=True)
    return 1 if failed or url is None else 0


if __name__ == "__main__":
    sys.exit(main())
