"""Hostile inputs and tampered outputs: nothing escapes the output root, readers trust nothing unchecked.

Covered elsewhere (not repeated here): tar members that escape, are absolute, symlinks or hardlinks
(tests/sources/test_tar_shards.py, test_end_to_end.py); checkpoints carrying pickled code
(tests/codec/test_checkpoint.py); a shard whose bytes were changed (tests/loaders/test_loaders.py).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from e2e_helpers import SAMPLE_IMAGES, sha256_file

HOSTILE_KEYS = ["../escape", "/etc/absolute", "a/../../up", "..", "ok.name", "fine_key"]


def _hostile_source(keys: list[str]):
    """A custom source (as a plugin could register) whose listing carries path-like keys."""
    from pipeline.sources.base import Source, SourceItem

    photo = SAMPLE_IMAGES / "n00000004" / "n00000004_1.JPEG"

    class HostileKeys(Source):
        registry_name = "hostile-keys"

        def __init__(self, root: str, **_):
            self.root = root

        def list_items(self):
            return [SourceItem(key=k, uri=str(photo), meta={"path": k}) for k in keys]

        def read_bytes(self, item):
            return Path(item.uri).read_bytes()

    return HostileKeys


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (HOSTILE_KEYS, r"5 key\(s\) are not tar-safe .*'\.\./escape', '/etc/absolute', 'a/\.\./\.\./up'"),
        (["same", "other", "same"], r"1 key\(s\) repeat in the listing: same"),
    ],
)
def test_a_source_with_unsafe_keys_is_refused_before_anything_is_written(
    keys, message, klt_codec, tmp_path, monkeypatch
):
    from pipeline.config import EncodeConfig
    from pipeline.registry import SOURCES
    from pipeline.runtime import run_encode
    from pipeline.runtime.dry_run import plan_encode
    from pipeline.sinks import SinkSpec
    from pipeline.sources import UnsafeKeyError

    monkeypatch.setitem(SOURCES, "hostile-keys", _hostile_source(keys))
    work = tmp_path / "work"
    work.mkdir()
    output = work / "out"
    cfg = EncodeConfig(
        input=str(work), sink=SinkSpec(output=str(output)), source="hostile-keys", codec=str(klt_codec)
    )
    with pytest.raises(UnsafeKeyError, match=message):
        run_encode(cfg)
    # nothing was written anywhere: the output folder the run's lease created is gone again
    assert _files(tmp_path) == ["work"]
    with pytest.raises(UnsafeKeyError, match=message):  # the dry run refuses the same listing
        plan_encode(cfg, resources={"CPU": 2})
    assert _files(tmp_path) == ["work"]


def test_check_keys_accepts_what_the_bundled_sources_make():
    from pipeline.sources import check_keys
    from pipeline.sources.base import SourceItem, unique_keys

    names = ["../escape", "/etc/absolute", "a/../../up", "a/b.c", "a_b_c", "ünï cödé"]
    check_keys([SourceItem(key=k, uri="x") for k in unique_keys(names)])


@pytest.mark.slow
def test_a_manifest_that_violates_the_schema_is_refused_by_the_loaders(reference_run, tmp_path):
    from pipeline.loaders import LatentWebDataset, RunInfo
    from pipeline.schemas import SchemaError

    cases = {
        "latent/bits": lambda m: m["latent"].__setitem__("bits", 12),
        "shards/3/sha256": lambda m: m["shards"][3].__setitem__("sha256", "not-a-digest"),
        "(root)": lambda m: m.pop("codec"),
        "format": lambda m: m.__setitem__("format", "someone-else/9"),
    }
    for where, edit in cases.items():
        copy = tmp_path / where.replace("/", "_").strip("()")
        shutil.copytree(reference_run, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        pattern = rf"manifest\.json does not match manifest\.schema\.json at {re.escape(where)}: "
        with pytest.raises(SchemaError, match=pattern):
            LatentWebDataset(str(copy))
        with pytest.raises(SchemaError, match=pattern):
            RunInfo.open(str(copy))


@pytest.mark.slow
def test_sample_metadata_is_validated_on_read(reference_run, tmp_path):
    """A forger who rewrites a shard and its sha256 in the manifest passes the tamper check; the
    metadata still has to match sample.schema.json (here: a key that is a path)."""
    from pipeline.loaders import LatentWebDataset
    from pipeline.schemas import SchemaError

    copy = tmp_path / "forged"
    shutil.copytree(reference_run, copy)
    shard = copy / "shard-000000.tar"
    out = io.BytesIO()
    with tarfile.open(shard) as src, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        forged = False
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".json") and not forged:
                meta = json.loads(data)
                meta["key"] = "../../etc/cron.d/job"
                data = json.dumps(meta).encode()
                member.size = len(data)
                forged = True
            dst.addfile(member, io.BytesIO(data))
    shard.write_bytes(out.getvalue())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = sha256_file(shard)
    manifest["shards"][0]["bytes"] = shard.stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))

    assert len(list(LatentWebDataset(str(copy), shuffle_shards=False))) == 24  # latents only: no meta
    with pytest.raises(SchemaError, match=r"shard-000000\.tar .* metadata does not match .* at key"):
        list(LatentWebDataset(str(copy), with_meta=True, shuffle_shards=False))


def test_encode_refuses_a_listing_even_when_the_output_exists(klt_codec, tmp_path, monkeypatch):
    """Append/resume go through the same listing check (it sits before planning)."""
    from pipeline.config import EncodeConfig
    from pipeline.registry import SOURCES
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec
    from pipeline.sources import UnsafeKeyError

    monkeypatch.setitem(SOURCES, "hostile-keys", _hostile_source(["../x"]))
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("untouched")
    for mode in ("resume", "append", "overwrite"):
        cfg = EncodeConfig(
            input=str(tmp_path),
            sink=SinkSpec(output=str(output)),
            source="hostile-keys",
            codec=str(klt_codec),
            mode=mode,
        )
        with pytest.raises(UnsafeKeyError):
            run_encode(cfg)
    assert (output / "keep.txt").read_text() == "untouched"
