"""The pipeline on object storage: an S3-compatible server on loopback (moto's, see s3_server.py).

Runs write `s3://` outputs through `EncodeConfig.storage_options` (they travel with the run's
settings to the lease, the markers, the manifest and every Ray worker's writer), read inputs from
`s3://` the same way (image-folder's `storage_options` source option), and are read back with the
loaders and with stock webdataset (`pipe:`, credentials from the environment).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from e2e_helpers import encode, read_webdataset, tree_bytes

pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the S3 server")
pytest.importorskip("s3fs")

from s3_server import KEY, REGION, SECRET, S3Server  # noqa: E402

pytestmark = pytest.mark.slow

BUCKET = "walloc-test"


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        server.create_bucket(BUCKET)
        yield server


def _objects(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """Relative name -> bytes of every object under s3://BUCKET/prefix/."""
    fs = s3.filesystem()
    root = f"{BUCKET}/{prefix}/"
    return {p[len(root) :]: fs.cat_file(p) for p in sorted(fs.find(root))}


def _local_files(output) -> dict[str, bytes]:
    """A local output's files, less the lease lock (local filesystems only: object stores have none)."""
    files = tree_bytes(output)
    files.pop("_lease.lock", None)
    return files


def _reference_latents(reference_run) -> dict[str, np.ndarray]:
    return {s["__key__"]: s["latent.npy"] for s in read_webdataset(reference_run)}


def test_webdataset_on_s3_is_the_local_run_byte_for_byte(s3, reference_run, corpus, klt_codec, monkeypatch):
    import webdataset as wds

    from pipeline.loaders import LatentWebDataset, RunInfo

    url = f"s3://{BUCKET}/wds"
    summary = encode(corpus, url, klt_codec, sink={"storage_options": s3.storage_options})
    assert (summary.inputs, summary.written, summary.errors, summary.failed_shards) == (25, 24, 1, [])
    # shards, markers, run state, errors.parquet and manifest: the local run's bytes, and nothing else
    # (no temporary objects, no lease left behind)
    assert _objects(s3, "wds") == _local_files(reference_run)

    reference = _reference_latents(reference_run)
    ds = LatentWebDataset(url, output="int", with_meta=True, storage_options=s3.storage_options)
    got = {b.meta["key"]: b.latents.numpy() for b in ds}
    assert sorted(got) == sorted(reference)
    assert all(np.array_equal(got[k], reference[k]) for k in got)

    # stock webdataset: a `pipe:` per shard, credentials and endpoint from the environment (botocore
    # reads AWS_ENDPOINT_URL), as on a cluster node with an instance role
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    cat = "import sys, fsspec; sys.stdout.buffer.write(fsspec.open(sys.argv[1], 'rb').open().read())"
    shards = RunInfo.open(url, s3.storage_options).shard_urls()
    assert len(shards) == 7 and all(u.startswith(f"{url}/shard-") for u in shards)
    pipes = [f'pipe:{sys.executable} -c "{cat}" {u}' for u in shards]
    samples = list(wds.WebDataset(pipes, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [s["__key__"] for s in read_webdataset(reference_run)]
    for s in samples:
        np.testing.assert_array_equal(s["latent.npy"], reference[s["__key__"]], err_msg=s["__key__"])


def test_a_refused_put_is_retried_a_bounded_number_of_times_then_reported(
    s3, reference_run, corpus, klt_codec
):
    """The store refuses (403) every PUT of shard 2: the writer tries WRITE_ATTEMPTS times, the shard
    is reported failed, no object of it is visible, shard 5 (also missing) is written and committed,
    and the manifest counts what is there. Once the store accepts the PUT, resuming completes it."""
    from pipeline.runtime.write_stage import WRITE_ATTEMPTS

    fs = s3.filesystem()
    reference = _local_files(reference_run)
    # what a run that died before committing shards 2 and 5 leaves (no manifest, no error table)
    for name, data in reference.items():
        if name in ("manifest.json", "errors.parquet") or "-000002." in name or "-000005." in name:
            continue
        fs.pipe_file(f"{BUCKET}/refused/{name}", data)
    url = f"s3://{BUCKET}/refused"
    s3.refuse_puts("/refused/shard-000002.tar")

    summary = encode(corpus, url, klt_codec, sink={"storage_options": s3.storage_options})
    assert summary.failed_shards == [2]
    assert "PermissionError" in summary.failures[2], summary.failures
    assert s3.put_count("/refused/shard-000002.tar") == WRITE_ATTEMPTS
    assert (summary.inputs, summary.written, summary.errors) == (25, 20, 1)
    objects = _objects(s3, "refused")
    assert not [n for n in objects if "000002" in n], "a refused shard leaves no object"
    # shard 5's marker was written by a worker after this driver had listed the markers at the start:
    # the manifest must still see it (no stale listing cache)
    assert objects["shard-000005.tar"] == reference["shard-000005.tar"]
    assert objects["_shards/shard-000005.json"] == reference["_shards/shard-000005.json"]
    from pipeline.manifest import OutputRoot

    manifest = OutputRoot(url, s3.storage_options).read_manifest()
    assert [s["shard"] for s in manifest["shards"]] == [0, 1, 3, 4, 5, 6]
    assert manifest["totals"] == {"inputs": 25, "written": 20, "errors": 1}

    s3.allow_puts()
    summary = encode(corpus, url, klt_codec, sink={"storage_options": s3.storage_options})
    assert (summary.failed_shards, summary.shards_encoded, summary.shards_skipped) == ([], 1, 6)
    assert _objects(s3, "refused") == reference


def test_zarr_on_s3_from_s3_inputs(s3, reference_run, corpus, klt_codec):
    """Inputs listed and read from s3:// by the workers; a Zarr store on s3://. Shard 5's marker PUT
    is refused at first: its rows are in the store (valid=True) but the shard is not committed, and
    the loader must not show them; resuming commits it."""
    import zarr

    from pipeline.loaders import LatentZarrDataset

    so = s3.storage_options
    fs = s3.filesystem()
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        fs.pipe_file(f"{BUCKET}/inputs/train/{path.relative_to(corpus)}", path.read_bytes())
    src = f"s3://{BUCKET}/inputs/train"
    url = f"s3://{BUCKET}/zarr"
    s3.refuse_puts("/zarr/_shards/shard-000005.json")
    sink = {"format": "zarr", "storage_options": so}
    run = {"source": "image-folder", "source_options": {"storage_options": so}}

    summary = encode(src, url, klt_codec, sink=sink, **run)
    assert summary.failed_shards == [5]
    assert (summary.inputs, summary.written, summary.errors) == (25, 20, 1)
    group = zarr.open_group(f"{url}/latents.zarr", mode="r", storage_options=so)
    assert int(group["valid"][:].sum()) == 24  # shard 5's rows were written before its marker failed
    assert len(LatentZarrDataset(url, storage_options=so)) == 20  # ... but are not committed

    s3.allow_puts()
    summary = encode(src, url, klt_codec, sink=sink, **run)
    assert (summary.failed_shards, summary.written, summary.errors) == ([], 24, 1)

    reference = _reference_latents(reference_run)
    ds = LatentZarrDataset(url, output="int", with_meta=True, storage_options=so)
    assert len(ds) == 24
    for i in range(len(ds)):
        z, label = sample = ds[i]
        meta = sample.meta
        assert meta["source"].startswith(f"{src}/"), meta["source"]
        assert label == meta["label"]
        np.testing.assert_array_equal(z.numpy(), reference[meta["key"]], err_msg=meta["key"])
    assert sorted(ds.keys()) == sorted(reference)
