#!/usr/bin/env python
"""Vendor the RayJob / RayCronJob schemas from KubeRay's CRDs as one JSON Schema file.

Why: the manifests in deploy/kuberay/ are only useful if the operator accepts them; a misspelt field
(`shutdownAfterJobFinish`) is silently pruned by Kubernetes, and the job then never shuts its
cluster down. The tests validate the manifests against the CRDs' own OpenAPI schemas, offline.

What is kept: the `v1` openAPIV3Schema of `spec` (status is the operator's, not ours), converted to
JSON Schema (2020-12): `nullable` becomes a null type; `additionalProperties: false` is added to every
object with declared properties, because the API server prunes (or, with strict validation,
rejects) unknown fields there. Repeated subtrees (the pod template appears three times per RayJob)
are shared through $defs. Not enforced: the CEL rules (x-kubernetes-validations) and formats.

    python deploy/kuberay/schemas/vendor_crds.py --repo /path/to/kuberay [--commit <sha>]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = {
    "RayJob": "ray-operator/config/crd/bases/ray.io_rayjobs.yaml",
    "RayCronJob": "ray-operator/config/crd/bases/ray.io_raycronjobs.yaml",
}
OUT = Path(__file__).with_name("kuberay-v1.schema.json")
CONSTANTS = "ray-operator/controllers/ray/utils/constant.go"  # name length limits (Go validation)
SHARE_ABOVE = 1500  # JSON characters: smaller repeated subtrees stay inline


def git_show(repo: str, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def v1_schema(crd_text: str) -> dict[str, Any]:
    crd = yaml.safe_load(crd_text)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 schema node (Kubernetes structural schema) -> JSON Schema, closed objects."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("nullable", "description"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _canon(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def _count(node: Any, key: str, top: bool, seen: dict[str, tuple[int, str]]) -> None:
    """seen[canonical JSON] = (occurrences, the property name it first appeared under)."""
    if isinstance(node, dict):
        if not top and "$ref" not in node:
            c = _canon(node)
            n, first = seen.get(c, (0, key))
            seen[c] = (n + 1, first)
        for k, v in node.items():
            _count(v, k, False, seen)
    elif isinstance(node, list):
        for v in node:
            _count(v, key, False, seen)


def _replace(node: Any, canon: str, ref: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if _canon(node) == canon:
            return ref
        return {k: _replace(v, canon, ref) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, canon, ref) for v in node]
    return node


def share_repeats(defs: dict[str, Any]) -> dict[str, Any]:
    """Replace repeated large subtrees by $refs to new $defs entries (largest first)."""
    while True:
        seen: dict[str, tuple[int, str]] = {}
        for name, node in defs.items():
            _count(node, name, True, seen)
        repeats = [(len(c), c, key) for c, (n, key) in seen.items() if n > 1 and len(c) > SHARE_ABOVE]
        if not repeats:
            return defs
        _, canon, key = max(repeats)
        name = f"{key}-{hashlib.sha256(canon.encode()).hexdigest()[:8]}"
        ref = {"$ref": f"#/$defs/{name}"}
        defs = {k: _replace(v, canon, ref) for k, v in defs.items()}
        defs[name] = json.loads(canon)


def name_limits(constant_go: str) -> dict[str, int]:
    """{kind: max metadata.name length} from KubeRay's constants (RayJob = cluster - 6, cron = job - 11)."""
    cluster = int(re.search(r"MaxRayClusterNameLength\s*=\s*(\d+)", constant_go)[1])
    job_offset = int(
        re.search(r"MaxRayJobNameLength\s*=\s*MaxRayClusterNameLength\s*-\s*(\d+)", constant_go)[1]
    )
    cron_offset = int(
        re.search(r"MaxRayCronJobNameLength\s*=\s*MaxRayJobNameLength\s*-\s*(\d+)", constant_go)[1]
    )
    return {"RayJob": cluster - job_offset, "RayCronJob": cluster - job_offset - cron_offset}


def build(repo: str, commit: str) -> dict[str, Any]:
    rayjob = v1_schema(git_show(repo, commit, CRDS["RayJob"]))
    raycron = v1_schema(git_show(repo, commit, CRDS["RayCronJob"]))
    job_spec = to_json_schema(rayjob["properties"]["spec"])
    cron_spec = to_json_schema(raycron["properties"]["spec"])
    if _canon(cron_spec["properties"]["jobTemplate"]) != _canon(job_spec):
        raise SystemExit("RayCronJob.spec.jobTemplate is no longer RayJob.spec: update this script")
    cron_spec["properties"]["jobTemplate"] = {"$ref": "#/$defs/RayJobSpec"}
    limits = name_limits(git_show(repo, commit, CONSTANTS))

    def resource(kind: str, spec_ref: dict[str, Any]) -> dict[str, Any]:
        dns = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        return {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {
                "apiVersion": {"const": "ray.io/v1"},
                "kind": {"const": kind},
                "metadata": {  # name, or generateName (+5 random characters)
                    "type": "object",
                    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
                    "properties": {
                        "name": {"type": "string", "pattern": dns, "maxLength": limits[kind]},
                        "generateName": {"type": "string", "maxLength": limits[kind] - 5},
                    },
                },
                "spec": spec_ref,
            },
            "additionalProperties": False,
        }

    defs = {
        "RayJob": resource("RayJob", {"$ref": "#/$defs/RayJobSpec"}),
        "RayCronJob": resource("RayCronJob", {"$ref": "#/$defs/RayCronJobSpec"}),
        "RayJobSpec": job_spec,
        "RayCronJobSpec": cron_spec,
    }
    defs = share_repeats(defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "Generated by vendor_crds.py from KubeRay's CRDs (Apache-2.0): do not edit by hand. "
        "Validate a manifest with {'$ref': '#/$defs/RayJob'} (or RayCronJob) plus these $defs.",
        "x-source": {
            "repository": "https://github.com/ray-project/kuberay",
            "commit": subprocess.run(
                ["git", "-C", repo, "rev-parse", commit], check=True, capture_output=True, text=True
            ).stdout.strip(),
            "files": sorted([*CRDS.values(), CONSTANTS]),
            "version": "v1",
        },
        "$defs": dict(sorted(defs.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", required=True, help="a kuberay clone (work tree or bare git dir)")
    parser.add_argument("--commit", default="HEAD", help="commit or tag, e.g. v1.6.0 (default HEAD)")
    args = parser.parse_args(argv)
    schema = build(args.repo, args.commit)
    OUT.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} from {schema['x-source']['commit']} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
