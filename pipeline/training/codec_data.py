"""Training data: random image crops and random audio windows from plain folders, split by file.

Every sample is a pure function of (seed, index): the crop/window position and the remix are drawn
from `np.random.default_rng((seed, index))`. So the batch at step s is the same whether training
ran straight through or was resumed from a checkpoint, in one process or spread over Ray workers,
and no sampler state needs checkpointing.

The held-out split is by FILE (a photo, an audio file or a multitrack folder): a file is either
in training or in validation/evaluation, never both. `split_by_file` is deterministic (a hash of
the name), and `describe_split` writes the lists into the codec's metadata.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
AUDIO_EXTS = (".ogg", ".flac", ".wav", ".mp3", ".opus", ".aiff", ".aif")
STEM_NAMES = frozenset({"vocals", "vocal", "bass", "drums", "other", "accompaniment", "mix"})
MAX_IMAGE_SIDE = 1024  # photos are downscaled to this at load: 4K wallpapers at 128 px are flat


@dataclass(frozen=True)
class Item:
    """One unit of the split: a file, or a folder of stems (multitrack) under a data root."""

    root: Path
    paths: tuple[Path, ...]  # one file, or the stems of one track

    @property
    def name(self) -> str:
        """Stable name relative to its root (the split and the metadata use it)."""
        first = self.paths[0].relative_to(self.root)
        return (first.parent if len(self.paths) > 1 else first).as_posix()


# --- discovery and splitting ------------------------------------------------------------------
def find_items(folders: Sequence[str | Path], exts: Sequence[str], *, stems: bool = False) -> list[Item]:
    """All files with `exts` under `folders` (recursive, sorted). With `stems`, a folder whose audio
    files are all named like stems (vocals.wav, bass.wav, ...) is one multitrack item."""
    items: list[Item] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {root} does not exist")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not stems:
            items += [Item(root, (p,)) for p in files]
            continue
        for _, group in itertools.groupby(files, key=lambda p: p.parent):
            group = list(group)
            if len(group) >= 2 and all(p.stem.lower() in STEM_NAMES for p in group):
                mix = [p for p in group if p.stem.lower() != "mix"]
                items.append(Item(root, tuple(mix)))
            else:
                items += [Item(root, (p,)) for p in group]
    if not items:
        raise FileNotFoundError(f"no {'/'.join(exts)} files under {[str(f) for f in folders]}")
    return items


def group_key(name: str) -> str:
    """Files that show the same scene share a key: the stereo pair motorcycle_left/_right."""
    return re.sub(r"_(left|right)(?=\.[^.]+$)", "", name)


def split_by_file(
    items: Sequence[Item], valid_fraction: float, seed: int = 0
) -> tuple[list[Item], list[Item]]:
    """(train, valid) by whole files (whole groups, see group_key): the groups whose salted name hash
    is smallest go to validation, until it holds valid_fraction of the files (at least one)."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(group_key(it.name), []).append(it)
    if len(groups) < 2:
        raise ValueError("need at least two files (groups) to hold one out")
    ranked = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    target = max(1, round(valid_fraction * len(items)))
    valid: list[Item] = []
    for k in ranked[:-1]:
        if len(valid) >= target:
            break
        valid += groups[k]
    held = {it.name for it in valid}
    train = [it for it in items if it.name not in held]
    return sorted(train, key=lambda it: it.name), sorted(valid, key=lambda it: it.name)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """MANIFEST.tsv rows (written by scripts/fetch_data.py) keyed by their file column, if any."""
    path = root / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    key = next((k for k in ("file", "path", "name") if rows and k in rows[0]), None)
    return {row[key]: row for row in rows} if key else {}


def filter_kinds(items: Sequence[Item], kinds: Sequence[str]) -> list[Item]:
    """Keep the items whose MANIFEST.tsv `kind` is in `kinds` (e.g. only real photos, no artwork).
    Items under a root without a manifest are kept."""
    out = []
    for it in items:
        manifest = read_manifest(it.root)
        row = manifest.get(it.paths[0].relative_to(it.root).as_posix())
        if not manifest or (row is not None and row.get("kind") in kinds):
            out.append(it)
    return out


def describe_split(train: Sequence[Item], valid: Sequence[Item]) -> dict:
    """File lists + content hashes + provenance (manifest rows) of a split, for codec metadata."""

    def entry(it: Item) -> dict:
        manifest = read_manifest(it.root)
        e: dict = {"name": it.name, "sha256": [file_sha256(p) for p in it.paths]}
        rows = [manifest.get(p.relative_to(it.root).as_posix()) for p in it.paths]
        rows = [r for r in rows if r]
        if rows:
            e["source"] = {k: v for k, v in rows[0].items() if k not in ("sha256",)}
        return e

    out: dict = {"roots": sorted({str(it.root) for it in [*train, *valid]})}
    for label, items in (("train", train), ("valid", valid)):
        entries = [entry(it) for it in items]
        digest = hashlib.sha256(
            "\n".join(f"{e['name']}\t{','.join(e['sha256'])}" for e in entries).encode()
        ).hexdigest()
        out[label] = {"count": len(entries), "sha256": digest, "files": entries}
    return out


# --- images -------------------------------------------------------------------------------------
def load_image(path: Path, max_side: int = MAX_IMAGE_SIDE, channels: int = 3) -> np.ndarray:
    """uint8 (H, W, channels): RGB, or grey (channels=1: Pillow's ITU-R 601 luma), downscaled
    (Lanczos) so the longer side is at most `max_side`."""
    mode = {3: "RGB", 1: "L"}[channels]
    with Image.open(path) as im:
        scale = max_side / max(im.size)
        if scale < 1:  # JPEG: decode at a reduced DCT scale that is still >= the target size
            im.draft(mode, (round(im.width * scale), round(im.height * scale)))
            scale = max_side / max(im.size)
        im = im.convert(mode)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        return np.asarray(im).reshape(im.height, im.width, channels).copy()


def to_signal(rgb: np.ndarray) -> Tensor:
    """uint8 (H, W, C) -> float (C, H, W) in [-0.5, 0.5], the codec's input range."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).sub(0.5)


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    rgb = _pad_to(rgb, size)
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[top : top + size, left : left + size]


def _pad_to(rgb: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an image smaller than `size` on either side."""
    ph, pw = max(0, size - rgb.shape[0]), max(0, size - rgb.shape[1])
    if ph or pw:
        rgb = np.pad(
            rgb, ((0, ph), (0, pw), (0, 0)), mode="reflect" if max(ph, pw) < min(rgb.shape[:2]) else "edge"
        )
    return rgb


class ImageCrops(Dataset):
    """Random `crop` x `crop` RGB crops (and random horizontal flips) from a list of image files.

    Decoded images are cached per process (photo sets here are tens of files)."""

    def __init__(
        self,
        items: Sequence[Item],
        crop: int,
        seed: int = 0,
        max_side: int = MAX_IMAGE_SIDE,
        channels: int = 3,
    ):
        self.paths = [it.paths[0] for it in items]
        self.crop, self.seed, self.max_side, self.channels = crop, seed, max_side, channels
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 1 << 62  # samples are indexed by a global counter, see StepBatches

    def image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = _pad_to(load_image(self.paths[i], self.max_side, self.channels), self.crop)
        return self._cache[i]

    def __getitem__(self, index: int) -> Tensor:
        rng = np.random.default_rng((self.seed, index))
        rgb = self.image(int(rng.integers(len(self.paths))))
        h, w = rgb.shape[:2]
        top, left = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        patch = rgb[top : top + self.crop, left : left + self.crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return to_signal(np.ascontiguousarray(patch))


def image_eval_batch(
    items: Sequence[Item], crop: int, max_side: int = MAX_IMAGE_SIDE, channels: int = 3
) -> Tensor:
    """Center crops of the held-out images: a fixed validation batch (B, channels, crop, crop)."""
    return torch.stack(
        [to_signal(center_crop(load_image(it.paths[0], max_side, channels), crop)) for it in items]
    )


# --- audio --------------------------------------------------------------------------------------
def normalize_audio(x: Tensor) -> Tensor:
    """The reference's normalisation: remove the mean, scale the peak to 0.5 (per window)."""
    x = x - x.mean()
    return x / (x.abs().max() + 1e-8) / 2


def mixing_weights(n: int) -> list[Tensor]:
    """The reference's stem remixes, generalised to n stems: the full mix, two stems up (1.5) and
    the rest down (0.5), and every subset of n-1, 2 and 1 stems at unit gain."""
    if n < 2:
        return [torch.ones(max(n, 1))]
    weights = [torch.ones(n)]
    for idx in itertools.combinations(range(n), 2):
        w = torch.full((n,), 0.5)
        w[list(idx)] = 1.5
        weights.append(w)
    for k in sorted({n - 1, 2, 1}, reverse=True):
        for idx in itertools.combinations(range(n), k):
            w = torch.zeros(n)
            w[list(idx)] = 1.0
            weights.append(w)
    return weights


def read_window(path: Path, start: int, length: int, channels: int) -> Tensor:
    """(channels, length) float32 from an audio file: seeks, zero-pads past the end, and maps
    mono to stereo (duplicates) or drops extra channels."""
    import soundfile as sf

    data, _ = sf.read(str(path), start=start, frames=length, dtype="float32", always_2d=True)
    x = torch.from_numpy(data.T.copy())
    if x.shape[0] < channels:
        x = x.repeat(-(-channels // x.shape[0]), 1)
    x = x[:channels]
    if x.shape[1] < length:
        x = torch.nn.functional.pad(x, (0, length - x.shape[1]))
    return x


def audio_info(path: Path) -> tuple[int, int]:
    """(frames, sample rate) of an audio file."""
    import soundfile as sf

    info = sf.info(str(path))
    return int(info.frames), int(info.samplerate)


class AudioWindows(Dataset):
    """Random windows of `length` samples from audio files (or stem folders, remixed at random),
    normalised the reference way. Files at another sample rate than `sample_rate` are refused."""

    def __init__(
        self, items: Sequence[Item], length: int, channels: int = 2, sample_rate: int = 44100, seed: int = 0
    ):
        self.items, self.length, self.channels, self.seed = list(items), length, channels, seed
        self.frames = []
        for it in self.items:
            frames, rate = audio_info(it.paths[0])
            if rate != sample_rate:
                raise ValueError(f"{it.name}: {rate} Hz, the codec is trained at {sample_rate} Hz")
            self.frames.append(frames)
        self.weights = {len(it.paths): mixing_weights(len(it.paths)) for it in self.items}

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, index: int) -> Tensor:
        rng = np.random.default_rng((self.seed, index))
        i = int(rng.integers(len(self.items)))
        item, frames = self.items[i], self.frames[i]
        start = int(rng.integers(max(1, frames - self.length + 1)))
        stems = torch.stack([read_window(p, start, self.length, self.channels) for p in item.paths])
        weights = self.weights[len(item.paths)]
        w = weights[int(rng.integers(len(weights)))]
        return normalize_audio((w.view(-1, 1, 1) * stems).sum(0))


def audio_eval_batch(items: Sequence[Item], length: int, channels: int = 2) -> Tensor:
    """The centre window of each held-out file (stems summed), normalised: (B, channels, length)."""
    out = []
    for it in items:
        frames, _ = audio_info(it.paths[0])
        start = max(0, (frames - length) // 2)
        out.append(normalize_audio(sum(read_window(p, start, length, channels) for p in it.paths)))
    return torch.stack(out)


# --- batching -----------------------------------------------------------------------------------
class StepBatches(Sampler[list[int]]):
    """Index batches for steps [start, stop): step s on rank r of `world` gets the global sample
    indices (s*world + r)*batch ... +batch-1, so data depends on the step, not on history."""

    def __init__(self, batch_size: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.batch_size, self.start, self.stop, self.rank, self.world = batch_size, start, stop, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            first = (step * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
