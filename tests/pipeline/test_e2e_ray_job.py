"""The job as a cluster runs it: `ray start --head` (dashboard on) + `ray job submit --working-dir`.

This test owns a whole Ray cluster of its own, driven only through the `ray` CLI in subprocesses,
so the pytest process's Ray (the session fixture) neither joins it nor is joined by it:
  - every port the head opens is picked free here (the defaults, e.g. the dashboard agent's 52365,
    are taken by any other Ray on the machine: the agent then starts without its HTTP server and
    job submission fails with "No available agent to submit job");
  - `--temp-dir` is private, so the cluster's address file does not make other `ray.init()`s join it;
  - token authentication is set up and used as docs/cluster.md says, read from that file: its
    `export RAY_AUTH_MODE=...` and `export RAY_AUTH_TOKEN=$(python -c "...")` lines (the token is
    made by that very command), its `ray start --head` flags and its `ray job submit` flags and
    excludes; the test only adds what a shared test machine needs (free ports, a private temp dir,
    the dashboard on loopback instead of 0.0.0.0, `--block`);
  - the head runs with `--block` and is stopped by signalling that process (its own cleanup stops
    what it started), never with `ray stop`, which kills every Ray process on the machine.
The dashboard needs `ray[default]` (aiohttp & co.); without it the test skips and says so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e_helpers import REPO, assert_same_tree, standard_args
from ray_cluster import free_ports, stop_leftovers

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
DOCS = REPO / "docs" / "cluster.md"
# what a shared test machine needs on top of the documented `ray start --head` (each replaces the
# documented flag of the same name, if any)
HEAD_TEST_FLAGS = ("--block", "--num-cpus=2", "--dashboard-host=127.0.0.1", "--disable-usage-stats")
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


def _bash_lines(path: Path) -> list[str]:
    """The command lines of the ```bash blocks of a markdown file, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        lines += [ln.strip() for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]
    return [ln for ln in lines if not ln.startswith("#")]


def documented_commands(path: Path = DOCS) -> dict[str, list[str]]:
    """The shell commands of docs/cluster.md, split like the shell does, by their first two and
    three words: "ray start --head", "ray job submit", "export RAY_AUTH_MODE=token" ... (the first of
    each)."""
    commands: dict[str, list[str]] = {}
    for line in _bash_lines(path):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not a plain command (a here-doc, an unbalanced quote): not one we run
            continue
        for key in (" ".join(words[:2]), " ".join(words[:3])):
            commands.setdefault(key, words)
    return commands


TOKEN_LINE = re.compile(r'export RAY_AUTH_TOKEN=\$\(python -c "([^"]+)"\)(\s+#.*)?')


def documented_token_code(path: Path = DOCS) -> str:
    """The python code of the docs' `export RAY_AUTH_TOKEN=$(python -c "...")` line."""
    found = [m.group(1) for ln in _bash_lines(path) if (m := TOKEN_LINE.fullmatch(ln))]
    assert found, f"{path.name} no longer makes the token with export RAY_AUTH_TOKEN=$(python -c ...)"
    return found[0]


def documented_auth_env(commands: dict[str, list[str]]) -> dict[str, str]:
    """RAY_AUTH_MODE and RAY_AUTH_TOKEN as the docs set them; the token made by the docs' command."""
    mode = commands["export RAY_AUTH_MODE=token"][1].split("=", 1)[1]
    made = subprocess.run([sys.executable, "-c", documented_token_code()], capture_output=True, text=True)
    token = made.stdout.strip()
    assert made.returncode == 0 and len(token) >= 32, f"the documented token command: {made.stderr}"
    return {"RAY_AUTH_MODE": mode, "RAY_AUTH_TOKEN": token}


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0]


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
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    docs = documented_commands()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the job's `python`
    env |= documented_auth_env(docs)  # RAY_AUTH_MODE=token + a token, as docs/cluster.md makes them
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # nothing to drain at the end: stop at once
    ours = [*[f"{flag}={port}" for flag, port in ports.items()], *HEAD_TEST_FLAGS, f"--temp-dir={temp_dir}"]
    replaced = {_flag(a) for a in ours}
    documented = [a for a in docs["ray start --head"][3:] if _flag(a) not in replaced]
    head_log = tmp_path / "head.log"
    log = head_log.open("wb")  # noqa: SIM115 - closed in the finally below
    head = subprocess.Popen(
        [RAY, "start", "--head", *documented, *ours], env=env, stdout=log, stderr=subprocess.STDOUT
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
        stop_leftovers(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_command(docs: dict[str, list[str]], url: str, job_args: list[str]) -> list[str]:
    """The documented `ray job submit` with this cluster's URL, this checkout as --working-dir and
    the test's job flags after the documented job script."""
    words = docs["ray job submit"]
    cut = words.index("--")
    flags = [url if w == "http://<head>:8265" else str(REPO) if w == "." else w for w in words[3:cut]]
    assert "http://<head>:8265" in words[3:cut] and "--working-dir" in flags, words
    script = words[cut + 1 : cut + 3]
    assert script == ["python", "jobs/encode_imagenet.py"], script
    return [RAY, "job", "submit", *flags, "--", *script, *job_args]


def test_the_docs_commands_are_complete() -> None:
    """What a reader copies from docs/cluster.md: the auth variables, the head, a worker, the submit
    (with excludes that keep the upload small), and the same variables in the README."""
    docs = documented_commands()
    assert {"export RAY_AUTH_MODE=token", "ray start --head", "ray start --address=<head>:6379"} <= set(docs)
    excludes = json.loads(docs["ray job submit"][docs["ray job submit"].index("--runtime-env-json") + 1])
    assert {".git", ".venv", "data", "out"} <= set(excludes["excludes"])
    readme = documented_commands(REPO / "README.md")
    assert readme["export RAY_AUTH_MODE=token"] == docs["export RAY_AUTH_MODE=token"]
    assert documented_token_code(REPO / "README.md") == documented_token_code(), "README makes another token"
    assert readme["ray start --head"] == docs["ray start --head"]
    assert documented_auth_env(docs)["RAY_AUTH_MODE"] == "token"


def test_ray_job_submit_to_a_started_cluster(ray_head, reference_run, corpus, klt_codec, tmp_path):
    url, env = ray_head
    output = tmp_path / "out"
    submit = _run(
        submit_command(documented_commands(), url, standard_args(corpus, output, klt_codec)), env, timeout=420
    )
    assert "succeeded" in submit.stdout, submit.stdout[-3000:]
    assert "inputs           25  (written 24 + errors 1)" in submit.stdout  # the job's summary, from its log
    assert "Uploading package gcs://_ray_pkg_" in submit.stderr  # the job ran from the uploaded working dir
    assert_same_tree(reference_run, output)


def test_without_the_token_the_cluster_refuses(ray_head) -> None:
    """What the issue saw: a client without the token is refused (so the docs' variables matter)."""
    url, env = ray_head
    bare = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    bare["HOME"] = str(Path(tempfile.mkdtemp(prefix="home", dir="/tmp")))  # no ~/.ray/auth_token either
    try:
        probe = _run([RAY, "job", "list", "--address", url], bare, timeout=120, check=False)
    finally:
        shutil.rmtree(bare["HOME"], ignore_errors=True)
    assert probe.returncode != 0
    assert "401" in probe.stderr or "uthentication" in probe.stderr, probe.stderr[-2000:]
