"""Stage 1: read each input of a shard and decode it on the CPU. Failures are error rows, never raised.

Reads are I/O (a disk, an object store): a few threads fetch the next inputs while the current one
decodes, so the core never waits for bytes. Each read and each decode has a time budget; an input
that takes longer becomes a `timeout` error row and its stuck thread is abandoned.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from collections.abc import Iterator
from typing import Any

from ..preprocess.factory import Preprocessor
from ..preprocess.image import DecodeError
from ..sources import Source, SourceItem
from .plan import ShardTask
from .work import DecodedSample, DecodedShard, ErrorRow, RawSample

READ_AHEAD = 8  # inputs read ahead of the one being decoded (bytes held: READ_AHEAD inputs)
READ_THREADS = 4


def sample_meta(item: SourceItem, data: bytes, decoded_meta: dict[str, Any], cache_salt: str) -> dict:
    """A decoded input's metadata: the source's and the decoder's, plus its source hash and cache key."""
    source_sha = hashlib.sha256(data).hexdigest()
    return (
        dict(item.meta)
        | decoded_meta
        | {
            "key": item.key,
            "source": item.uri,
            "label": item.label,
            "source_sha256": source_sha,
            "cache_key": hashlib.sha256(f"{source_sha}:{cache_salt}".encode()).hexdigest(),
        }
    )


class ShardDecoder:
    """ShardTask -> DecodedShard: bytes from the source, pixels/waveforms from the preprocessor."""

    def __init__(self, source: Source, preprocessor: Preprocessor, cache_salt: str, timeout: float):
        self.source = source
        self.preprocessor = preprocessor
        self.cache_salt = cache_salt
        self.timeout = timeout
        self._decode_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def __call__(self, task: ShardTask) -> DecodedShard:
        out = DecodedShard(task=task)
        for slot, item, data in self._read(task, out.errors):
            if self.preprocessor.device_decode:  # the encoder decodes these on its device
                out.raw.append(RawSample(item=item, slot=slot, data=data))
                continue
            sample = self.decode_one(item, slot, data, task.shard)
            if isinstance(sample, ErrorRow):
                out.errors.append(sample)
            else:
                out.samples.append(sample)
        return out

    def decode_one(self, item: SourceItem, slot: int, data: bytes, shard: int) -> DecodedSample | ErrorRow:
        """One input through the CPU decode path (also the device path's fallback)."""
        future = self._decode_pool.submit(self.preprocessor.decode, data, item)
        try:
            decoded = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._decode_pool.shutdown(wait=False)  # abandon the stuck thread
            self._decode_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            return ErrorRow.of(item, shard, "timeout", f"decoding took longer than {self.timeout:.0f} s")
        except DecodeError as err:
            return ErrorRow.of(item, shard, "decode", str(err))
        except Exception as err:  # noqa: BLE001 - any decode failure is a per-sample error
            return ErrorRow.of(item, shard, "decode", f"{type(err).__name__}: {err}")
        meta = sample_meta(item, data, decoded.meta, self.cache_salt)
        return DecodedSample(key=item.key, label=item.label, slot=slot, array=decoded.array, meta=meta)

    def _read(self, task: ShardTask, errors: list[ErrorRow]) -> Iterator[tuple[int, SourceItem, bytes]]:
        """(slot, item, bytes) in order, READ_AHEAD inputs in flight; failed reads go to `errors`."""
        items = tuple(task.items)  # a ListingSlice materialises once
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=READ_THREADS)
        futures: dict[int, concurrent.futures.Future] = {}
        try:
            for i, item in enumerate(items):
                for j in range(i, min(i + READ_AHEAD, len(items))):
                    if j not in futures:
                        futures[j] = pool.submit(self.source.read_bytes, items[j])
                try:
                    data = futures.pop(i).result(timeout=self.timeout)
                except concurrent.futures.TimeoutError:
                    reason = f"reading took longer than {self.timeout:.0f} s"
                    errors.append(ErrorRow.of(item, task.shard, "timeout", reason))
                    # the stuck thread is abandoned with its pool; reads not started yet start again
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = concurrent.futures.ThreadPoolExecutor(max_workers=READ_THREADS)
                    futures = {j: f for j, f in futures.items() if f.done()}
                    continue
                except Exception as err:  # noqa: BLE001 - any read failure is a per-sample error
                    errors.append(ErrorRow.of(item, task.shard, "read", f"{type(err).__name__}: {err}"))
                    continue
                yield i, item, data
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
