"""A real multi-node Ray cluster on this machine, driven through the `ray` CLI (tests and benchmarks).

`ray start --head --num-cpus 1` plus `ray start --address <head> --num-cpus 1` per extra node, with
token authentication as Ray 2.60 turns it on by default (a token made here, in RAY_AUTH_MODE /
RAY_AUTH_TOKEN for every process that joins). Every port each node opens is picked free, the temp
dir is private (other `ray.init()`s on the machine do not join it), and the cluster is stopped by
signalling the `ray start --block` processes (never `ray stop`, which kills every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
NODE_PORT_FLAGS = (  # ports every node opens
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
)
HEAD_PORT_FLAGS = ("--port", "--ray-client-server-port", *NODE_PORT_FLAGS)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_env() -> dict[str, str]:
    """The environment of a process that starts or joins the cluster: the token, no stray address."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    return env


def _node_count(address: str, env: dict[str, str]) -> int:
    code = (
        f"import ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0


@contextlib.contextmanager
def local_cluster(
    nodes: int = 2, cpus_per_node: int = 1, log_dir: Path | None = None
) -> Iterator[tuple[str, dict]]:
    """Yields (GCS address, environment to run drivers in) of a running `nodes`-node cluster."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rayn", dir="/tmp"))  # short: socket paths must fit 107 B
    log_dir = log_dir or temp_dir
    env = cluster_env()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        head_ports = dict(zip(HEAD_PORT_FLAGS, free_ports(len(HEAD_PORT_FLAGS)), strict=True))
        address = f"127.0.0.1:{head_ports['--port']}"
        common = [f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--object-store-memory=300000000"]
        common += ["--block", "--disable-usage-stats"]
        for i in range(nodes):
            if i == 0:
                args = ["--head", *[f"{f}={p}" for f, p in head_ports.items()], "--include-dashboard=false"]
                args += [f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1"]
            else:
                ports = dict(zip(NODE_PORT_FLAGS, free_ports(len(NODE_PORT_FLAGS)), strict=True))
                args = [f"--address={address}", *[f"{f}={p}" for f, p in ports.items()]]
                args += ["--node-ip-address=127.0.0.1"]
            logs.append((log_dir / f"node{i}.log").open("wb"))
            procs.append(
                subprocess.Popen(
                    [RAY, "start", *args, *common], env=env, stdout=logs[-1], stderr=subprocess.STDOUT
                )
            )
            deadline = time.monotonic() + 180
            while _node_count(address, env) < i + 1:
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    text = (log_dir / f"node{i}.log").read_text()[-3000:]
                    raise RuntimeError(f"node {i} of the local cluster did not come up:\n{text}")
                time.sleep(1)
        yield address, env
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        stop_leftovers(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_leftovers(marker: str, wait_s: float = 30.0) -> None:
    """Processes of this cluster (they name its temp dir) still alive after the nodes stopped."""
    deadline = time.monotonic() + wait_s
    while True:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        pids = [int(line.split()[0]) for line in ps.splitlines() if marker in line]
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
