"""The job as a cluster runs it: `ray start --head` (dashboard on) + `ray job submit --working-dir`.

This test owns a whole Ray cluster of its own, driven only through the `ray` CLI in subprocesses,
so the pytest process's Ray (the session fixture) neither joins it nor is joined by it:
  - every port the head opens is picked free here (the defaults, e.g. the dashboard agent's 52365,
    are taken by any other Ray on the machine: the agent then starts without its HTTP server and
    job submission fails with "No available agent to submit job");
  - `--temp-dir` is private, so the cluster's address file does not make other `ray.init()`s join it;
  - token authentication (Ray's default) uses a token made here, passed to the head and the client;
  - the head runs with `--block` and is stopped by signalling that process (its own cleanup stops
    what it started), never with `ray stop`, which kills every Ray process on the machine.
The dashboard needs `ray[default]` (aiohttp & co.); without it the test skips and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e_helpers import REPO, assert_same_tree, standard_args

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
# what the working-dir upload leaves out (Ray honours .gitignore too; explicit is clearer)
EXCLUDES = [".git", ".venv", ".venv-*", "data", "out", "build", "**/__pycache__", ".pytest_cache"]
# every port the head opens, each picked free here
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--ray-client-server-port",
    "--node-manager-port",
    "--object-manager-port",
)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _dashboard_available() -> str | None:
    try:
        import aiohttp  # noqa: F401
        import ray.dashboard.modules.job.job_head  # noqa: F401
    except ImportError as err:
        return f"the Ray dashboard is not installed (pip install 'ray[default]'): {err}"
    return None


def _run(args: list[str], env: dict, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        out = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        pytest.fail(f"{' '.join(args[:4])} ... exited {proc.returncode}:\n{out}")
    return proc


@pytest.fixture
def ray_head(tmp_path):
    """A head node with the dashboard; yields (dashboard URL, environment for the `ray` CLI)."""
    missing = _dashboard_available()
    if missing:
        pytest.skip(missing)
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjob", dir="/tmp"))  # short: socket paths must fit 107 B
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the job's `python`
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # nothing to drain at the end: stop at once
    head_log = tmp_path / "head.log"
    log = head_log.open("wb")  # noqa: SIM115 - closed in the finally below
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            *[f"{flag}={port}" for flag, port in ports.items()],
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 240
        while True:  # ready when the job API answers (the dashboard and the node's job agent are up)
            if head.poll() is not None:
                pytest.fail(f"ray start exited {head.returncode}:\n{head_log.read_text()[-3000:]}")
            probe = _run([RAY, "job", "list", "--address", url], env, timeout=60, check=False)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard at {url} did not answer:\n{probe.stderr[-3000:]}")
            time.sleep(2)
        yield url, env
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        _stop_leftovers(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_leftovers(marker: str, wait_s: float = 30.0) -> None:
    """Processes of this cluster (they name its temp dir) still alive after the head stopped: give them
    a moment, then end them one by one by pid."""
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


def test_ray_job_submit_to_a_started_cluster(ray_head, reference_run, corpus, klt_codec, tmp_path):
    url, env = ray_head
    output = tmp_path / "out"
    submit = _run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            url,
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps({"excludes": EXCLUDES}),
            "--",
            "python",
            "jobs/encode_imagenet.py",
            *standard_args(corpus, output, klt_codec),
        ],
        env,
        timeout=420,
    )
    assert "succeeded" in submit.stdout, submit.stdout[-3000:]
    assert "inputs           25  (written 24 + errors 1)" in submit.stdout  # the job's summary, from its log
    assert "Uploading package gcs://_ray_pkg_" in submit.stderr  # the job ran from the uploaded working dir
    assert_same_tree(reference_run, output)
