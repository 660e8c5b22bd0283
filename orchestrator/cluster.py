"""The Ray instance a sweep runs on: a local one sized for this machine, or an existing cluster.

Local (default): the GPUs the user allows are read with NVML *before* `ray.init` (GPUs this torch
build cannot run are refused), and Ray is started with those visible, each also a custom resource
of its own; a GpuPool then follows their load while the sweep runs. No GPU or no NVML -> CPUs
only, said once. The dashboard binds 127.0.0.1.
`--address host:port`: join that cluster; our code is shipped to its nodes as the job's
working_dir, and the results directory must be on a filesystem every node sees (checked).
"""
from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from engine.datasets.download import NO_DOWNLOAD_ENV
from engine.errors import ConfigError
from orchestrator import dashboard, gpus
from orchestrator.flags import DEFAULT
from orchestrator.gpu_pool import GpuPool, our_pids, resource_name

REPO_ROOT = Path(__file__).resolve().parents[1]
# Trials that ask for 0 GPUs must see none (Ray >= 2.48 leaves CUDA_VISIBLE_DEVICES alone);
# trials never download: the launcher's data stage has made the data ready.
WORKER_ENV = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1", NO_DOWNLOAD_ENV: "1"}
SHIP_EXCLUDES = [".git", "results", "data", "wandb", "logs", "**/__pycache__", "*.pt", "*.ckpt"]
Say = Callable[[str], None]


@dataclass
class ClusterOptions:
    address: str | None = None           # None: a new local Ray
    usage_threshold: float = DEFAULT["usage_threshold"]   # idle GPU: memory and utilization below this
    waitsecs: float = DEFAULT["waitsecs"]   # re-probe interval while every GPU is busy
    want_gpus: bool = True               # False: --gpus_per_trial 0, do not even look
    num_cpus: int | None = None          # local: None = every core
    num_gpus: int | None = None          # local: declare this many GPUs instead of probing (tests)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None    # None: 8265 or the next free port
    sweep_name: str | None = None        # names the Ray job: "normsweep: <name>" (dashboard.job_name)


@dataclass
class ClusterInfo:
    address: str
    owned: bool                          # we started it, we stop it
    dashboard_url: str | None            # with its scheme
    token_auth: bool
    gpus: float                          # GPUs Ray may hand to trials
    max_node_cpus: float
    max_node_gpus: float
    nodes: int
    notes: list[str] = field(default_factory=list)
    local_gpus: list[gpus.GpuStatus] = field(default_factory=list)   # a local start's GPUs, as read


def check_address(address: str) -> None:
    """One clear line before anything starts when `host:port` does not answer."""
    if address == "auto":
        address = _find_cluster()
    if address == "local" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected host:port (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({exc.strerror or exc})") from None


def _find_cluster() -> str:
    """What `auto` means to Ray (RAY_ADDRESS, the last `ray start`, a running GCS), as host:port."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except (ConnectionError, ValueError) as exc:
        raise ConfigError(f"--address auto: no running Ray cluster found ({str(exc).split('. ')[0]}); "
                          "start one with `ray start --head`, or leave --address out to start a local "
                          "one") from None


@contextlib.contextmanager
def session(opts: ClusterOptions, say: Say) -> Iterator[ClusterInfo]:
    """Start or join Ray; an already initialized Ray (tests, notebooks) is used as it is."""
    import ray

    if ray.is_initialized():
        yield describe(ray, owned=False, address=ray.get_runtime_context().gcs_address)
        return
    info = join(opts, say) if opts.address or dashboard.in_ray_job() else start_local(opts, say)
    try:
        yield info
    finally:
        ray.shutdown()


def start_local(opts: ClusterOptions, say: Say) -> ClusterInfo:
    import ray

    notes, chosen, per_gpu = [], [], {}
    if opts.num_gpus is not None:
        n_gpus = opts.num_gpus
    else:
        chosen, why = choose_gpus() if opts.want_gpus else ([], "--gpus_per_trial 0")
        if chosen:
            # NVML numbers GPUs in PCI bus order; CUDA (and so Ray) get them by UUID, which no
            # device order can confuse. Busy ones are in too: the pool holds them back until idle.
            os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(g.uuid for g in chosen)
            per_gpu = {resource_name(g.uuid): 1.0 for g in chosen}
            notes.append(f"GPUs: {', '.join(f'{g.label} ({g.uuid})' for g in chosen)}; re-read every "
                         f"{opts.waitsecs:g} s: a GPU others make busy gets no new trials until idle again")
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
            notes.append(f"no GPU to use ({why}): running trials on CPUs")
        n_gpus = len(chosen)
    os.environ.update(WORKER_ENV)
    # Ray 2.60 turns token auth on for a new local cluster and warns about it; dashboard_lines
    # says the same with what to do, so its log line stays off the terminal.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Workers import engine/ and orchestrator/ from this checkout, wherever the launcher runs.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    ctx = ray.init(address="local", num_cpus=opts.num_cpus, num_gpus=n_gpus, resources=per_gpu,
                   object_store_memory=object_store_bytes(), include_dashboard=True,
                   dashboard_host=opts.dashboard_host, dashboard_port=opts.dashboard_port,
                   log_to_driver=False, logging_level="WARNING", job_config=dashboard.job_config(opts.sweep_name))
    info = describe(ray, owned=True, address=ctx.address_info.get("gcs_address", "local"),
                    dashboard=ctx.dashboard_url)
    info.notes, info.local_gpus = notes + info.notes, chosen
    return info


def choose_gpus() -> tuple[list[gpus.GpuStatus], str | None]:
    """The GPUs the user's CUDA_VISIBLE_DEVICES allows, busy or not, after refusing GPUs this
    torch build cannot run (ConfigError: before Ray starts); ([], why) when there are none."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")   # indices read in nvidia-smi's (PCI bus) order
    reading = gpus.probe(visible)
    why = gpus.check_runnable(reading, torch.cuda.get_arch_list(), torch.version.cuda)
    if why:
        raise ConfigError(why)
    return reading.gpus, reading.why_none


def gpu_pool(info: ClusterInfo, opts: ClusterOptions, gpus_per_trial: float, say: Say) -> GpuPool | None:
    """The pool that places a local sweep's trials on its GPUs (None: Ray's count decides).
    `gpus_per_trial`: the largest share a trial asks for (more than 1 GPU: Ray places it)."""
    if not info.local_gpus or not 0 < gpus_per_trial <= 1:
        return None
    uuids = ",".join(g.uuid for g in info.local_gpus)   # CUDA_VISIBLE_DEVICES is ours by now
    pool = GpuPool(info.local_gpus, threshold=opts.usage_threshold, waitsecs=opts.waitsecs,
                   probe=lambda: gpus.probe(uuids, ours=our_pids()), say=say)
    pool.refresh(force=True)   # says now which GPUs start held back
    return pool


def join(opts: ClusterOptions, say: Say) -> ClusterInfo:
    import ray

    address, env = _join_target(opts)
    try:
        ctx = ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="WARNING",
                       job_config=dashboard.job_config(opts.sweep_name))
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--address {address}" if opts.address else f"the Ray job's cluster {address}"
        raise ConfigError(f"{where}: cannot join the cluster "
                          f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    dashboard.name_submitted_job(opts.sweep_name)
    return describe(ray, owned=True, address=address, dashboard=ctx.dashboard_url)


def _join_target(opts: ClusterOptions) -> tuple[str, dict]:
    """--address: ship this checkout as the job's working_dir. Inside `ray job submit`: the
    job's cluster (RAY_ADDRESS) and the working_dir it has shipped (Ray refuses a second one)."""
    if dashboard.in_ray_job():
        job_env = json.loads(os.environ[dashboard.SUBMISSION_ENV]).get("runtime_env") or {}
        return opts.address or os.environ.get("RAY_ADDRESS", "auto"), {  # nor a variable set twice
            "env_vars": {k: v for k, v in WORKER_ENV.items() if k not in (job_env.get("env_vars") or {})}}
    check_address(opts.address)
    return opts.address, {"working_dir": str(REPO_ROOT), "excludes": SHIP_EXCLUDES, "env_vars": dict(WORKER_ENV)}


def describe(ray, owned: bool, address: str, dashboard: str | None = None) -> ClusterInfo:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = [n.get("Resources", {}) for n in nodes]
    if dashboard is None:
        with contextlib.suppress(Exception):
            from ray._private.worker import get_dashboard_url
            dashboard = get_dashboard_url()
    return ClusterInfo(
        address=address, owned=owned,
        dashboard_url=(dashboard if "://" in dashboard else f"http://{dashboard}") if dashboard else None,
        token_auth=os.environ.get("RAY_AUTH_MODE", "").lower() == "token",
        gpus=sum(r.get("GPU", 0) for r in res),
        max_node_cpus=max((r.get("CPU", 0) for r in res), default=0),
        max_node_gpus=max((r.get("GPU", 0) for r in res), default=0),
        nodes=len(nodes))


def fit_trial_resources(info: ClusterInfo, cpus: float, gpus_per_trial: float | None) -> tuple[float, str | None]:
    """The GPUs each trial asks for, or a ConfigError when a trial could never be placed
    (Tune would wait forever). None (default): one GPU per trial when there are GPUs."""
    if cpus > info.max_node_cpus:
        raise ConfigError(f"--cpus_per_trial {cpus:g} exceeds the largest node's {info.max_node_cpus:g} CPUs")
    if gpus_per_trial is None:   # 1 at most: packing.pack lowers it where trials fit together
        return (1.0 if info.gpus else 0.0), None
    if gpus_per_trial > 0 and info.gpus == 0:
        return 0.0, f"--gpus_per_trial {gpus_per_trial:g} but Ray has no GPU: running trials on CPUs"
    if gpus_per_trial > info.max_node_gpus:
        raise ConfigError(f"--gpus_per_trial {gpus_per_trial:g} exceeds the largest node's "
                          f"{info.max_node_gpus:g} GPUs")
    return gpus_per_trial, None


def check_shared_storage(root: Path, timeout_s: float = 180.0) -> None:
    """Every node must see the results directory (trial results, logs, Tune's checkpoints)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    root.mkdir(parents=True, exist_ok=True)  # the sweep is confirmed by now; nodes look inside it
    probe = root / f".node_probe_{token}"
    probe.write_text(token)

    @ray.remote(num_cpus=0)
    def sees(path: str, expected: str) -> bool:
        try:
            return Path(path).read_text() == expected
        except OSError:
            return False

    try:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        refs = {n["NodeManagerAddress"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(probe), token) for n in nodes}
        blind = [ip for ip, ref in refs.items() if not ray.get(ref, timeout=timeout_s)]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise ConfigError(f"results directory {root} is not visible from node(s) {', '.join(blind)}; "
                          "use a --results_dir on a filesystem every node mounts (NFS)")


def dashboard_lines(info: ClusterInfo) -> list[str]:
    if not info.dashboard_url:
        return ["Ray dashboard: not available (is ray[default] installed?)"]
    lines = [f"Ray dashboard: {info.dashboard_url}"]
    if info.token_auth:
        lines.append("  token auth is on: run `ray get-auth-token` on this machine and paste the token "
                     "when the page asks (RAY_AUTH_MODE=disabled turns it off)")
    host_port = info.dashboard_url.split("://", 1)[-1]
    bound, _, port = host_port.rpartition(":")
    if info.owned and bound in ("127.0.0.1", "localhost"):
        lines.append(f"  from your laptop: ssh -N -L {port}:127.0.0.1:{port} {getpass.getuser()}@"
                     f"{socket.gethostname()}  then open http://localhost:{port}")
    return lines


def object_store_bytes() -> int:
    """Trials exchange metrics only (checkpoints go through files), so a small store is enough:
    10% of RAM, between 256 MiB and 4 GiB (Ray's default takes 30%)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(min(max(total * 0.10, 256 << 20), 4 << 30))
