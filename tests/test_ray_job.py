"""`ray job submit` against a running cluster (a local `ray start --head`, in its own temp dir
and ports, so other Ray clusters on this machine are left alone): the sweep runs on after the
submitting client is killed mid-sweep (or never waits: --no-wait), its output is in `ray job
logs`, its results land as with a plain launch, the job is named after the sweep, and
submitting the same command again runs nothing twice. Slow: ~45 s on 2 cores."""
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
from pathlib import Path
from urllib.request import Request, urlopen

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))   # this environment's CLI, activated or not
SWEEP = ["--datasets", "seq-digits", "--models", "er", "--methods", "bn", "--buffer_sizes", "20",
         "--num_seeds", "2", "--nowandb", "--name", "jobsweep"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """`ray start --head --block` in a new session; torn down by its process group and by
    every process whose command line names its temp dir (nothing else is touched)."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")        # short: Ray's socket paths
    dash = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Ray 2.60's clients send the token (~/.ray/auth_token) only in token mode, which a new
    # cluster is in by default
    env["RAY_AUTH_MODE"] = "token"
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--port", str(free_port()), "--num-cpus", "2", "--num-gpus", "0",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--temp-dir", temp,
         "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert proc.poll() is None, "ray start --head ended"
            if subprocess.run([RAY, "job", "list", "--address", url], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(1)
        else:
            raise AssertionError("the cluster's job API did not answer within 90 s")
        yield url, env
    finally:
        with_ours = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_names(p, temp)]
        for pid in [proc.pid, *with_ours]:
            try:
                os.killpg(pid, signal.SIGKILL) if pid == proc.pid else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _cmdline_names(pid: str, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def submit_command(url, results, sid, *client_flags):
    return [RAY, "job", "submit", "--address", url, "--submission-id", sid, "--working-dir", str(ROOT),
            *client_flags, "--", "python", "launcher.py", "--yes", "--results_dir", str(results), *SWEEP]


def wait_for(url, env, sid, timeout_s=240):
    """The job's final info from the dashboard's job API (what the Jobs page reads)."""
    token = subprocess.run([RAY, "get-auth-token"], env=env, capture_output=True, text=True).stdout.split()
    headers = {"Authorization": f"Bearer {token[-1]}"} if token else {}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        info = json.load(urlopen(Request(f"{url}/api/jobs/{sid}", headers=headers), timeout=30))
        if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return info
        time.sleep(1)
    raise AssertionError(f"job {sid} still {info['status']} after {timeout_s} s:\n{job_logs(url, env, sid)}")


def job_logs(url, env, sid):
    return subprocess.run([RAY, "job", "logs", "--address", url, sid], env=env, capture_output=True,
                          text=True, timeout=60).stdout


def test_a_submitted_sweep_runs_without_its_client_and_a_resubmission_runs_nothing_twice(head, tmp_path):
    url, env = head
    results = tmp_path / "results"
    # the client follows the job's output until the sweep's first trial logs, then dies
    client = subprocess.Popen(submit_command(url, results, "normsweep-first"), env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not list((results / "jobsweep" / "_logs").glob("*.txt")):
        assert client.poll() is None, "the submitting client ended before the sweep started"
        time.sleep(0.2)
    client.kill()
    client.wait()
    assert not list((results / "jobsweep").glob("*/result.json")), "the sweep ended before its client died"
    info = wait_for(url, env, "normsweep-first")
    logs = job_logs(url, env, "normsweep-first")
    assert info["status"] == "SUCCEEDED", logs
    assert "Sweep 'jobsweep'" in logs and "0 already finished, 2 to run" in logs and "All 2 trials finished." in logs
    assert info["metadata"].get("job_name") == "normsweep: jobsweep"   # the Jobs page's Name column
    done = {p.parent.name: p.stat().st_mtime_ns for p in (results / "jobsweep").glob("*/result.json")}
    assert len(done) == 2 and (results / "jobsweep" / "trials.csv").exists()
    assert len(list((results / "jobsweep" / "_logs").glob("*.txt"))) == 2

    again = subprocess.run(submit_command(url, results, "normsweep-again", "--no-wait"), env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr     # --no-wait: the client never waits
    info = wait_for(url, env, "normsweep-again")
    logs = job_logs(url, env, "normsweep-again")
    assert info["status"] == "SUCCEEDED" and "Nothing to run" in logs, logs
    assert {p.parent.name: p.stat().st_mtime_ns for p in (results / "jobsweep").glob("*/result.json")} == done


def test_a_relative_results_dir_inside_a_ray_job_is_refused_in_one_line(head):
    url, env = head
    proc = subprocess.run(submit_command(url, "results", "normsweep-relative"), env=env, capture_output=True,
                          text=True, timeout=180, cwd=ROOT)
    assert proc.returncode != 0
    assert re.search(r"error: --results_dir 'results' inside a Ray job: give an absolute path", proc.stdout + proc.stderr)
