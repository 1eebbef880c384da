"""`pip install <wheel>` in a fresh venv works: schemas and bundled files ship inside the package,
the console scripts run a real encode from a folder outside the checkout, the loaders read it back.

Offline and honest: the wheel is built from a copy of the files a wheel is made of (pyproject.toml,
README.md, pipeline/, schemas/) with the setuptools already installed (--no-build-isolation); the
fresh venv gets the wheel with `pip install --no-deps --no-index`, and the project's dependencies
through a .pth line naming this environment's site-packages (no copy, no download). A .pth *line*
only adds that folder to sys.path: the .pth files inside it, among them the checkout's editable
finder, are not run, so `pipeline` can only come from the venv's own site-packages (asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


READ_BACK = """
import sys
import pipeline
from pipeline.loaders import LatentWebDataset
from pipeline.loaders.common import RunInfo
assert pipeline.__file__.startswith(sys.argv[2]), pipeline.__file__
n = sum(1 for _ in LatentWebDataset(sys.argv[1]))  # every sample, verified against the manifest
print(n, RunInfo.open(sys.argv[1]).codec().name)
"""


def _run(args: list, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{args[:3]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of what a wheel or `pip install .` is built from (as the Docker image copies it)."""
    src = tmp_path_factory.mktemp("wheel") / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "schemas", src / "schemas")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "pipeline", src / "pipeline", symlinks=True, ignore=ignore)
    assert (src / "pipeline" / "_schemas").is_symlink()  # the checkout's link, not a copy
    return src


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    tmp, src = source.parent, source
    out = tmp / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            out,
            src,
        ],
        tmp,
        env,
    )
    (whl,) = out.glob("walloc_pipeline-*.whl")
    return whl


def test_schemas_have_one_home() -> None:
    """pipeline/_schemas is a link to schemas/, never a second copy that could drift."""
    link = ROOT / "pipeline" / "_schemas"
    assert link.is_symlink() and os.readlink(link) == "../schemas"
    from pipeline import schemas

    assert schemas.SCHEMA_DIR.resolve() == (ROOT / "schemas").resolve()


def test_the_wheel_holds_schemas_and_console_scripts(wheel: Path) -> None:
    import tomllib

    from pipeline.jobs import COMMANDS

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for schema in (ROOT / "schemas").iterdir():
        assert f"pipeline/_schemas/{schema.name}" in names, schema.name
    assert any(n.startswith("pipeline/codec/bundled/") for n in names)
    assert any(n.startswith("pipeline/samples/images/") for n in names)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {cmd: f"pipeline.jobs.{mod}:main" for mod, cmd in COMMANDS.items()}
    for cmd in scripts:
        assert f"{cmd} = " in entry_points


def test_installed_wheel_encodes_and_reads_back_outside_the_checkout(
    source: Path, wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "venv", venv], tmp_path, env, timeout=300)  # pip from ensurepip: offline
    py = venv / "bin" / "python"
    site = Path(
        _run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env
        ).stdout.strip()
    )
    (site / "walloc_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # the dependencies
    # ensurepip's setuptools (3.11: 65, without bdist_wheel) would shadow the build backend of the .pth
    _run([py, "-m", "pip", "uninstall", "-y", "setuptools"], tmp_path, env)
    work = tmp_path / "elsewhere"  # a folder with no checkout in it or above it
    work.mkdir()
    check = "import pipeline, pipeline.schemas as s; s.load_schema('errors.schema.json'); print(s.__file__)"
    # `pip install .` (setuptools comes from the .pth, hence --no-build-isolation), then the wheel
    pip = [py, "-m", "pip", "install", "--no-deps", "--no-index"]
    _run([*pip, "--no-build-isolation", source], tmp_path, env)
    assert _run([py, "-c", check], work, env).stdout.strip().startswith(str(site))
    _run([*pip, "--force-reinstall", wheel], tmp_path, env)
    where = _run([py, "-c", check], work, env).stdout.strip()
    assert where.startswith(str(site)), f"pipeline imported from {where}, not the venv"

    out = work / "latents"
    encode = [venv / "bin" / "walloc-encode-images", "--limit", "4", "--shard-size", "2", "--output", out]
    run = _run([*encode, "--no-progress", "--address", "local", "--workers", "1"], work, env)
    assert "written" in run.stdout, run.stdout[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["written"] + manifest["totals"]["errors"] == 4

    read = _run(
        [
            py,
            "-c",
            READ_BACK,
            out,
            site,
        ],
        work,
        env,
    )
    count, codec = read.stdout.split()
    assert int(count) == manifest["totals"]["written"] > 0 and codec == manifest["codec"]["name"]

    bad = subprocess.run(
        [venv / "bin" / "walloc-encode-images", "--shard-size", "0", "--output", work / "x"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --shard-size: "), bad.stderr
