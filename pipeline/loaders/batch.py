"""The one structure every loader yields, for every modality and option.

Why: a tuple whose length depends on the run (audio adds a mask) and the options (`with_meta` adds
the metadata) breaks `for z, y in loader:` as soon as either changes. A `Batch` always unpacks as
`(latents, labels)`; everything else is reached by name and is None where the run or the options
do not provide it:

    for z, y in loader: ...              # any run, any options
    for batch in loader:
        batch.latents, batch.labels      # (B, C, h, w) | (B, C, T) float or int8; (B,) int64
        batch.mask                       # (B, T) bool: latent steps holding signal (audio runs), else None
        batch.meta                       # list of per-sample metadata dicts (with_meta=True), else None
        batch.key                        # list of sample keys (always)

A stream without batch_size yields one sample in the same structure: latents (C, h, w), labels an
int, mask (T,), meta a dict, key a str. It is a dataclass, not a tuple, so that torch's DataLoader
passes it through unchanged (`batch_size=None`, as `.loader()` uses) and collates samples of the
map-style LatentZarrDataset into one Batch (`collate`, registered with torch's default_collate).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data._utils.collate import default_collate_fn_map


@dataclass
class Batch:
    """Latents and labels (what `for z, y in loader` unpacks) plus mask, meta and key by name."""

    latents: torch.Tensor
    labels: torch.Tensor | int  # -1 where unlabelled
    mask: torch.Tensor | None = None  # audio: valid latent steps (contract C6)
    meta: dict[str, Any] | list[dict[str, Any]] | None = None  # with_meta=True: sample.schema.json
    key: str | list[str] | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.latents
        yield self.labels

    def pin_memory(self, device: Any = None) -> Batch:
        """For DataLoader(pin_memory=True): it calls this on a type it does not know."""
        return self._map(lambda t: t.pin_memory(device) if device is not None else t.pin_memory())

    def to(self, *args: Any, **kwargs: Any) -> Batch:
        """Tensors moved (`batch.to("cuda", non_blocking=True)`); meta and key stay as they are."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def _map(self, fn) -> Batch:
        labels = fn(self.labels) if isinstance(self.labels, torch.Tensor) else self.labels
        mask = fn(self.mask) if self.mask is not None else None
        return replace(self, latents=fn(self.latents), labels=labels, mask=mask)


def collate(samples: Sequence[Batch], **_: Any) -> Batch:
    """Samples (one Batch each) -> one Batch: latents and masks stacked, labels a tensor, meta and
    key lists. Every sample has the same fields (they come from one loader)."""
    first = samples[0]
    return Batch(
        latents=torch.stack([s.latents for s in samples]),
        labels=torch.tensor([int(s.labels) for s in samples]),
        mask=torch.stack([s.mask for s in samples]) if first.mask is not None else None,
        meta=[s.meta for s in samples] if first.meta is not None else None,
        key=[s.key for s in samples] if first.key is not None else None,
    )


# DataLoader(LatentZarrDataset(...), batch_size=B): torch's default_collate looks types up here
# (the extension point its documentation gives), so no collate_fn is needed
default_collate_fn_map[Batch] = collate
