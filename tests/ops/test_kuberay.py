"""KubeRay manifests: valid against the vendored CRD schemas, and consistent with the job and image."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kuberay"
SCHEMA = json.loads((DEPLOY / "schemas" / "kuberay-v1.schema.json").read_text())
ONE_OFF = DEPLOY / "rayjob-encode-imagenet.yaml"
CRON = DEPLOY / "raycronjob-encode-imagenet-append.yaml"
FALLBACK = DEPLOY / "cronjob-fallback.yaml"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def _fallback_rayjob() -> dict[str, Any]:
    config = _one(FALLBACK, "ConfigMap")
    return yaml.safe_load(config["data"]["rayjob.yaml"])


def _job_specs() -> dict[str, dict[str, Any]]:
    """Every RayJob spec we ship: the one-off, the RayCronJob's template, the fallback's template."""
    return {
        "one-off": _one(ONE_OFF, "RayJob")["spec"],
        "raycronjob": _one(CRON, "RayCronJob")["spec"]["jobTemplate"],
        "fallback": _fallback_rayjob()["spec"],
    }


def _errors(doc: dict[str, Any], kind: str) -> list[str]:
    schema = {"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{kind}"}
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _pin(name: str) -> str:
    import tomllib

    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        if re.match(rf"{name}(\[|=)", spec):
            return spec.split("==")[1].split()[0]
    raise AssertionError(name)


def _job_parser():
    spec = importlib.util.spec_from_file_location("encode_imagenet_job", ROOT / "jobs" / "encode_imagenet.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job.build_parser()


def test_schema_is_vendored_from_a_noted_commit() -> None:
    source = SCHEMA["x-source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert "ray-operator/config/crd/bases/ray.io_rayjobs.yaml" in source["files"]
    assert {"RayJob", "RayCronJob", "RayJobSpec", "RayCronJobSpec"} <= set(SCHEMA["$defs"])


@pytest.mark.parametrize(
    ("path", "kind"), [(ONE_OFF, "RayJob"), (CRON, "RayCronJob"), (FALLBACK, "ConfigMap:RayJob")]
)
def test_manifests_validate_against_the_crd_schema(path: Path, kind: str) -> None:
    if kind == "ConfigMap:RayJob":
        doc, kind = _fallback_rayjob(), "RayJob"
    else:
        doc = _one(path, kind)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    assert _errors(doc, kind) == []


def test_schema_catches_misspelt_fields_wrong_types_and_missing_required() -> None:
    """The validation is not vacuous: the mistakes that Kubernetes would silently prune fail here."""
    good = _one(ONE_OFF, "RayJob")
    assert _errors(good, "RayJob") == []

    typo = copy.deepcopy(good)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    assert any("shutdownAfterJobFinish" in e for e in _errors(typo, "RayJob"))

    deep_typo = copy.deepcopy(good)
    deep_typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0][
        "resource"
    ] = {}
    assert _errors(deep_typo, "RayJob")

    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "eight"
    assert _errors(wrong_type, "RayJob")

    missing = copy.deepcopy(good)
    del missing["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in _errors(missing, "RayJob"))

    cron = copy.deepcopy(_one(CRON, "RayCronJob"))
    cron["spec"]["concurrencyPolicy"] = "Forbid"  # a CronJob field RayCronJob does not have
    assert any("concurrencyPolicy" in e for e in _errors(cron, "RayCronJob"))

    long_name = copy.deepcopy(good)
    long_name["metadata"]["name"] = "x" * 48  # KubeRay refuses RayJob names over 47 characters
    assert _errors(long_name, "RayJob")


@pytest.mark.parametrize("which", ["one-off", "raycronjob", "fallback"])
def test_rayjob_cluster_shape(which: str) -> None:
    spec = _job_specs()[which]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and "backoffLimit" in spec
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _pin("ray")
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}

    def limits(group: dict) -> dict:
        (container,) = group["template"]["spec"]["containers"]
        return container["resources"]["limits"]

    gpu_groups = [g for g in groups.values() if int(limits(g).get("nvidia.com/gpu", 0)) > 0]
    cpu_groups = [g for g in groups.values() if int(limits(g).get("nvidia.com/gpu", 0)) == 0]
    assert gpu_groups and cpu_groups, "a CPU decode group and a GPU encode group"

    images = [c["image"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]]
    images += [g["template"]["spec"]["containers"][0]["image"] for g in cpu_groups]
    gpu_images = [g["template"]["spec"]["containers"][0]["image"] for g in gpu_groups]
    version = {i.rsplit(":", 1)[1].removesuffix("-cu128") for i in images + gpu_images}
    assert len(version) == 1, "head and workers must run the same image version (same Ray)"
    assert all(not re.search(r"-cu\d+$", i) for i in images)
    # the CUDA variant documented in docker/README.md
    assert all(i.endswith("-cu128") for i in gpu_images)
    assert "rayproject/ray:2.60.0-py311-cu128" in (ROOT / "docker" / "README.md").read_text()

    args = _entrypoint_args(spec)
    gpus_per_pod = {int(limits(g)["nvidia.com/gpu"]) for g in gpu_groups}
    assert args.num_gpus_per_worker > 0 and all(n % args.num_gpus_per_worker == 0 for n in gpus_per_pod)


def _entrypoint_args(spec: dict[str, Any]):
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("/app/"), "the image's copy of the job"
    script = ROOT / argv[1].removeprefix("/app/")
    assert script.exists(), f"{argv[1]} is not in the repository (the image copies the repo to /app)"
    return _job_parser().parse_args(argv[2:])  # argparse exits on an unknown flag


def test_entrypoints_parse_and_modes() -> None:
    specs = _job_specs()
    parsed = {k: _entrypoint_args(s) for k, s in specs.items()}
    assert parsed["one-off"].mode == "resume"
    assert parsed["raycronjob"].mode == "append" and parsed["fallback"].mode == "append"
    for a in parsed.values():
        assert a.input.startswith("s3://") and a.output.startswith("s3://")
        assert not a.dry_run
    # append continues the one-off's dataset: same output and the same settings (else it is refused)
    same = ("input", "output", "codec", "format", "latent_format", "shard_size", "size", "crop")
    for key in same:
        assert len({getattr(a, key) for a in parsed.values()}) == 1, key


@pytest.mark.parametrize("which", ["one-off", "raycronjob", "fallback"])
def test_runtime_env_yaml(which: str) -> None:
    env = yaml.safe_load(_job_specs()[which]["runtimeEnvYAML"])
    assert isinstance(env, dict)
    assert all(isinstance(v, str) for v in env.get("env_vars", {}).values()), "Ray needs string env vars"
    if "working_dir" in env:
        assert env["working_dir"] == "/app" or "://" in env["working_dir"]


def _daily_period_s(schedule: str) -> int:
    minute, hour, dom, month, dow = schedule.split()
    assert minute.isdigit() and hour.isdigit() and (dom, month, dow) == ("*", "*", "*"), schedule
    return 86400


def test_raycronjob_schedule_and_no_overlap_by_deadline() -> None:
    cron = _one(CRON, "RayCronJob")["spec"]
    period = _daily_period_s(cron["schedule"])
    assert cron["jobTemplate"]["activeDeadlineSeconds"] < period
    assert len(_one(CRON, "RayCronJob")["metadata"]["name"]) <= 36  # its RayJobs add "-<minutes>"


def test_fallback_cronjob_forbids_overlap_and_may_create_rayjobs() -> None:
    docs = {d["kind"]: d for d in _docs(FALLBACK)}
    cronjob = docs["CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    period = _daily_period_s(cronjob["spec"]["schedule"])
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] < period
    rule = next(r for r in docs["Role"]["rules"] if "rayjobs" in r["resources"])
    assert "ray.io" in rule["apiGroups"] and {"create", "get"} <= set(rule["verbs"])
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert any(s["name"] == pod["serviceAccountName"] for s in binding["subjects"])
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    script = container["args"][0]
    assert f"{mount['mountPath']}/rayjob.yaml" in script and "rayjob.yaml" in docs["ConfigMap"]["data"]
    # the pod waits for the RayJob (so that Forbid means something) and fails when it fails
    assert "jobDeploymentStatus" in script and "SUCCEEDED" in script


def test_pods_use_the_shipped_service_account() -> None:
    (account,) = _docs(DEPLOY / "serviceaccount.yaml")
    for spec in _job_specs().values():
        cluster = spec["rayClusterSpec"]
        templates = [cluster["headGroupSpec"]["template"]] + [
            g["template"] for g in cluster["workerGroupSpecs"]
        ]
        assert {t["spec"]["serviceAccountName"] for t in templates} == {account["metadata"]["name"]}


def test_every_cluster_turns_token_authentication_on() -> None:
    """Ray 2.60 checks a token on every call (docs/cluster.md): each RayJob asks the operator for one,
    which it puts on the head, the workers and the submitter (KubeRay >= 1.5.1)."""
    for name, spec in _job_specs().items():
        assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}, name
