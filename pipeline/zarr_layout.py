"""The Zarr store's layout: every array name, in one place, for the sink that writes the store
(sinks/zarr.py) and the loaders that read it (loaders/zarr.py, loaders/common.py).

    latents.zarr/                     STORE, under the output root
      latents        (N, C, h, w) | (N, C, T) int8   one chunk per row, one Zarr shard per pipeline shard
      latents_flip   same shape                      --flip-pair: the mirrored input's latent
      buckets/<WxH>/latents[_flip]                   --buckets: one array per bucket, rows written sparse
      labels (N,) int64 (-1: none)   keys (N,) str   meta (N,) str (sample JSON)   valid (N,) bool
      bucket (N,) str                                --buckets: each row's bucket name
      cache_keys (N,) str                            each row's cache_key ("" for empty rows; older
                                                     stores may lack it)
Row i is input i of the run's plan; rows of failed inputs keep valid=False.
"""

from __future__ import annotations

STORE = "latents.zarr"
LATENTS = "latents"
LATENTS_FLIP = "latents_flip"
LABELS = "labels"
KEYS = "keys"
META = "meta"
VALID = "valid"
BUCKET = "bucket"
CACHE_KEYS = "cache_keys"
BUCKET_GROUP = "buckets"
ROW_ARRAYS = (LABELS, KEYS, META, VALID)  # one value per row, every layout


def latent_names(flip: bool) -> tuple[str, ...]:
    """The latent arrays of a store (per bucket, if bucketed)."""
    return (LATENTS, LATENTS_FLIP) if flip else (LATENTS,)


def latent_path(bucket: str | None, name: str = LATENTS) -> str:
    """Path of a latent array in the group: `latents`, or `buckets/<WxH>/latents` for a bucket."""
    return f"{BUCKET_GROUP}/{bucket}/{name}" if bucket else name
