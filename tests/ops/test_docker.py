"""The cluster image, checked without a Docker engine: parse, COPY sources, version pins."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).parent))
from _dockerfile import (  # noqa: E402
    DockerfileError,
    arg_defaults,
    copy_sources,
    is_ignored,
    parse,
    read_dockerignore,
    substitute,
)

try:
    import tomllib
except ImportError:  # python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LOCK = ROOT / "docker" / "requirements.lock"
RAY_TAG = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d+)-(?P<platform>cpu|cu\d+)$")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pin(name: str) -> str:
    """The exact version pyproject pins a dependency to (name==X)."""
    for spec in _pyproject()["dependencies"]:
        req = Requirement(spec)
        if req.name == name:
            (s,) = req.specifier
            assert s.operator == "==", f"{name} must be pinned exactly in pyproject.toml"
            return s.version
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _lock() -> dict[str, str]:
    lines = [ln for ln in LOCK.read_text().splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("==", 1) for ln in lines)


def _instructions():
    return parse(DOCKERFILE.read_text())


def test_parser_handles_continuations_comments_and_rejects_typos() -> None:
    text = "# syntax=docker/dockerfile:1\nARG B=x:1\nFROM ${B}\nRUN a \\\n# note\n  && b\n"
    text += 'COPY --chown=u:g ["a b", "c", "/d/"]\n'
    ins = parse(text)
    assert [i.cmd for i in ins] == ["ARG", "FROM", "RUN", "COPY"]
    assert ins[2].args == "a && b"
    assert copy_sources(ins[3]) == ["a b", "c"] and ins[3].flags == {"chown": "u:g"}
    assert substitute(ins[1].args, arg_defaults(ins)) == "x:1"
    with pytest.raises(DockerfileError, match="unknown instruction"):
        parse("FROM x\nCOPPY a b\n")
    with pytest.raises(DockerfileError, match="before the first FROM"):
        parse("RUN x\nFROM y\n")


def test_dockerfile_parses_and_builds_from_the_base_image_arg() -> None:
    ins = _instructions()
    froms = [i for i in ins if i.cmd == "FROM"]
    assert len(froms) == 1 and froms[0].args == "${BASE_IMAGE}"
    args = arg_defaults(ins)
    assert {"BASE_IMAGE", "TORCH_VERSION", "TORCH_INDEX_URL"} <= set(args)
    workdirs = [i.args for i in ins if i.cmd == "WORKDIR"]
    assert workdirs[-1] == "/app"  # the KubeRay manifests run `python jobs/...` from /app


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    rules = read_dockerignore(ROOT / ".dockerignore")
    copies = [i for i in _instructions() if i.cmd in ("COPY", "ADD")]
    assert copies
    copied = set()
    for ins in copies:
        assert "from" not in ins.flags  # single-stage build: every source is from the context
        for src in copy_sources(ins):
            assert (ROOT / src).exists(), f"line {ins.line}: COPY source {src} does not exist"
            assert not is_ignored(src, rules), f"line {ins.line}: {src} is excluded by .dockerignore"
            copied.add(src.rstrip("/"))
    # what the job needs at run time: the package and its schemas (built into the wheel), the jobs
    assert {"pipeline", "schemas", "jobs", "pyproject.toml", "docker/requirements.lock"} <= copied


def test_the_package_is_installed_as_a_wheel_not_editable() -> None:
    """The image installs the package like a user would (`pip install <dir>`): its schemas must come
    from the wheel (tests/ops/test_wheel_install.py proves they do)."""
    runs = " ".join(i.args for i in _instructions() if i.cmd == "RUN")
    assert re.search(r"pip install --no-deps /tmp/src(\s|$)", runs)
    assert " -e " not in f" {runs} " and "--editable" not in runs
    copies = {
        src.rstrip("/"): i.args.split()[-1]
        for i in _instructions()
        if i.cmd == "COPY"
        for src in copy_sources(i)
    }
    assert copies["schemas"] == "/tmp/src/schemas" and copies["pipeline"] == "/tmp/src/pipeline"


def test_base_image_ray_version_equals_the_pins() -> None:
    base = arg_defaults(_instructions())["BASE_IMAGE"]
    m = RAY_TAG.match(base)
    assert m, f"{base} is not a rayproject/ray:<version>-py<xy>-<cpu|cuXYZ> tag"
    assert m["platform"] == "cpu"  # the default build is the CPU variant
    assert m["ray"] == _pin("ray") == _lock()["ray"] == md.version("ray")
    lock_python = re.search(r"# python (\d+)\.(\d+)", LOCK.read_text())
    assert m["py"] == lock_python[1] + lock_python[2], "base image python differs from the lock's"


def test_torch_pin_and_index_match_pyproject() -> None:
    args = arg_defaults(_instructions())
    assert args["TORCH_VERSION"] == _pin("torch") == md.version("torch").split("+")[0]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "torch" not in _lock()  # installed from the variant's index, not from the lock
    runs = [substitute(i.args, args) for i in _instructions() if i.cmd == "RUN"]
    assert any(f"torch=={_pin('torch')}" in r and "download.pytorch.org/whl/cpu" in r for r in runs)


def _cuda_builds(text: str) -> list[tuple[str, str]]:
    """(BASE_IMAGE, TORCH_INDEX_URL) of every documented `docker build` with build args."""
    builds = []
    for cmd in re.split(r"docker build", text)[1:]:
        base = re.search(r"--build-arg BASE_IMAGE=(\S+)", cmd)
        index = re.search(r"--build-arg TORCH_INDEX_URL=(\S+)", cmd)
        if base or index:
            assert base and index, "a variant build must set BASE_IMAGE and TORCH_INDEX_URL together"
            builds.append((base[1], index[1]))
    return builds


@pytest.mark.parametrize("doc", ["docker/README.md", "docker/Dockerfile"])
def test_documented_cuda_variant_is_consistent(doc: str) -> None:
    builds = _cuda_builds((ROOT / doc).read_text())
    assert builds, f"{doc} documents no CUDA build"
    for base, index in builds:
        m = RAY_TAG.match(base)
        assert m and m["platform"].startswith("cu"), base
        assert m["ray"] == _pin("ray")
        assert index == f"https://download.pytorch.org/whl/{m['platform']}", (base, index)


def test_lock_satisfies_pyproject() -> None:
    spec = importlib.util.spec_from_file_location("docker_lock", ROOT / "docker" / "lock.py")
    lock_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_tool)
    lock = _lock()
    for req in lock_tool.runtime_requirements():
        if req.name == "torch":
            continue
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{req.name} is not in docker/requirements.lock: run docker/lock.py"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"lock has {name}=={lock[name]}, not {req}"
        )
    assert lock["s3fs"] == lock["fsspec"]  # s3fs releases pin fsspec to their own version


def test_dockerignore_keeps_heavy_and_private_paths_out() -> None:
    rules = read_dockerignore(ROOT / ".dockerignore")
    for path in [".venv", ".venv/bin/python", "data", "data/imagenet-mini/train/x.JPEG", "out/run", ".git"]:
        assert is_ignored(path, rules), path
    for path in ["pipeline/runtime/driver.py", "pipeline/__pycache__/x.pyc", "jobs/encode_imagenet.py"]:
        assert is_ignored(path, rules) == path.endswith(".pyc"), path


def test_torchvision_is_the_release_for_the_pinned_torch_from_the_same_index() -> None:
    """--decode gpu needs torchvision.io.decode_jpeg: a wheel built for another torch fails to load its
    ops (PyPI's beside the CPU torch: 'operator torchvision::nms does not exist'), so it comes from
    the same index, in the same pip call, at the release paired with torch (0.N+15 for 2.N)."""
    args = arg_defaults(_instructions())
    torch_minor = int(args["TORCH_VERSION"].split(".")[1])
    assert args["TORCHVISION_VERSION"].split(".")[:2] == ["0", str(torch_minor + 15)]
    runs = [substitute(i.args, args) for i in _instructions() if i.cmd == "RUN"]
    (install,) = [r for r in runs if f"torch=={args['TORCH_VERSION']}" in r]
    assert f"torchvision=={args['TORCHVISION_VERSION']}" in install and args["TORCH_INDEX_URL"] in install
