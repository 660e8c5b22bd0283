"""Screenshots of the Ray dashboard during a small sweep, in headless Chromium (issue 19).

    python benchmarks/dashboard_screenshots.py [--out DIR]

Starts `launcher.py` on a 40-trial seq-digits sweep (its own local Ray, token auth off so the
browser needs no token; about two minutes of trials, so the pages are read while it runs), and
saves the Jobs, Actors, job and one trial actor's page as PNGs under DIR, checking each page's
rendered text: the job's Name "normsweep: screenshots", the trial actors' run names, the job's
tasks named `<run name>.train` (its Task Table clicked open), and the trial header in the
actor's log. Each page is polled until its text shows (the trials keep both CPUs busy) or a
minute passes. Then the sweep is interrupted (Ctrl-C, as a user would). Exit 0 when every page
shows its text; 1 otherwise.
Without Chromium (Debian: `apt-get install chromium`) it says so and exits 0: tests/
test_dashboard.py checks the same through Ray's state API, which those pages read.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "screenshots"
SWEEP = ["--datasets", "seq-digits", "--models", "er", "--methods", "bn", "gn", "--num_seeds", "20",
         "--buffer_sizes", "20", "--nowandb", "--yes", "--name", NAME, "--cpus_per_trial", "1"]
# screenshot name -> (dashboard route, text it must show, section or tab to open first); the
# launcher's driver is a new cluster's first job; "actor" (a trial process's page) is added once known
PAGES = {"jobs": ("jobs", f"normsweep: {NAME}", None), "actors": ("actors", "seq-digits_", None),
         "job": ("jobs/01000000", ".train", "Task Table")}


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Opens what is titled so (case aside): a tab is clicked; a section only while it shows no more
# than its title (a click on an open one would close it). Then scrolls to it for the screenshot.
OPEN = """(() => {
  const up = "translate(normalize-space(text()), 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')";
  const title = document.evaluate(`//*[${up}='%s']`, document, null,
                                  XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
  if (!title) return;
  const tab = title.closest('[role=tab]'), box = title.parentElement.parentElement;
  if (tab) tab.click();
  else if (box.innerText.trim().toUpperCase() === title.innerText.trim().toUpperCase()) title.click();
  title.scrollIntoView();
})()"""


class Browser:
    """Headless Chromium driven over its DevTools protocol (aiohttp's websocket client, which Ray's
    dashboard brings): open a page, click a section open, wait for a text, take a screenshot."""

    def __init__(self, binary: str):
        self.port, self.profile = free_port(), tempfile.mkdtemp(prefix="chromium")
        self.proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1400",
                                      f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ids = itertools.count(1)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _call(self, ws, method: str, **params):
        msg_id = next(self.ids)
        await ws.send_json({"id": msg_id, "method": method, "params": params})
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                return data.get("result", {})
        raise RuntimeError(f"{method}: the browser closed the connection")

    async def _text(self, ws) -> str:
        r = await self._call(ws, "Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                             returnByValue=True)
        return r.get("result", {}).get("value", "")

    async def _page(self, url: str, png: Path, wanted: str, click: str | None, timeout: float) -> bool:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for _ in range(100):   # the DevTools endpoint comes up a moment after the process
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
                        tabs = [t for t in await resp.json() if t.get("type") == "page"]
                        if tabs:
                            break
                await asyncio.sleep(0.2)
            async with http.ws_connect(tabs[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                await self._call(ws, "Page.navigate", url=url)
                deadline, found = time.monotonic() + timeout, False
                while time.monotonic() < deadline and not found:
                    await asyncio.sleep(1)
                    if click:   # a collapsed section (the job page's Task Table) or a tab: open it
                        await self._call(ws, "Runtime.evaluate", expression=OPEN % click.upper())
                    found = wanted in await self._text(ws)
                await asyncio.sleep(1)   # let the table finish drawing
                if click:   # open already: this only scrolls to it, now that it has its rows
                    await self._call(ws, "Runtime.evaluate", expression=OPEN % click.upper())
                shot = await self._call(ws, "Page.captureScreenshot", format="png")
                png.write_bytes(base64.b64decode(shot["data"]))
                return found

    def page(self, url: str, png: Path, wanted: str, click: str | None = None, timeout: float = 60) -> bool:
        """Whether the page at `url` shows `wanted` within `timeout` s (clicking `click` open
        first); its screenshot goes to `png` either way."""
        return asyncio.run(self._page(url, png, wanted, click, timeout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dashboard_screenshots", help="where the PNGs go")
    args = parser.parse_args()
    binary = chromium()
    if binary is None:
        print("skipped: headless Chromium is not installed (Debian: apt-get install chromium); "
              "tests/test_dashboard.py checks the same through Ray's state API")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = Path(tempfile.mkdtemp(prefix="screens"))
    browser = Browser(binary)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    launch = subprocess.Popen([sys.executable, str(ROOT / "launcher.py"), *SWEEP, "--results_dir", str(results),
                               "--dashboard_port", str(free_port())], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url, failed, actors = None, [], []
    try:
        for line in launch.stdout:
            print(line, end="")
            url = url or (re.search(r"Ray dashboard: (http://\S+)", line) or [None, None])[1]
            if url and list((results / NAME / "_logs").glob("*.txt")):
                break                                   # trials run: the pages have something to show
        time.sleep(5)
        pages = dict(PAGES)
        with urllib.request.urlopen(f"{url}/api/v0/actors?detail=1&limit=100", timeout=30) as resp:
            actors = [a for a in json.load(resp)["data"]["result"]["result"]
                      if a["class_name"].endswith("ResourceTrainable")]
        if actors:   # a trial process's page: its log, which starts each trial with the trial's header
            pages["actor"] = (f"actors/{actors[0]['actor_id']}", "same trial by hand: python -m engine", "stdout")
        for name, (route, wanted, click) in pages.items():
            png = out / f"{name}.png"
            ok = browser.page(f"{url}/#/{route}", png, wanted, click)
            failed += [] if ok else [route]
            print(f"{'ok' if ok else 'MISSING'} {route}: {wanted!r} ({png})", flush=True)
        launch.send_signal(signal.SIGINT)          # done with the pages: stop the sweep as a user would
    finally:
        browser.close()
        for line in launch.stdout:   # the rest of the sweep's output (the pipe must not fill)
            print(line, end="")
        launch.wait(timeout=600)
        shutil.rmtree(results, ignore_errors=True)
    return 1 if failed or url is None or not actors else 0


if __name__ == "__main__":
    sys.exit(main())
