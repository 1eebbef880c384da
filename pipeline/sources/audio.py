"""Audio sources: folders of audio files, and MUSDB18-HQ-style multitrack stems, cut into windows.

Windows are defined at the codec's rate (`sample_rate`): a file of F frames at rate S resamples to
L = ceil(F * R / S) samples at rate R; windows start at 0, hop, 2*hop, ... and the last one, which
reaches or passes L, is partial (the preprocessor zero-pads it and records its valid length). A
file shorter than one window gives one partial window; an empty file gives one window whose decode
fails ("empty audio"), so it shows up as an error row. Listing reads headers only.

One item per window (for MUSDB: one per window holding every stem, see below). `read_bytes` returns
a small WAV excerpt, not the whole file: the source frames under the window plus resampler context
on both sides (the excerpt's first frame, `meta["read"][0]`, is a multiple of S / gcd(R, S), so the
window lands on whole samples after resampling; with enough context the excerpt resamples to exactly
what the whole file would). The excerpt keeps the file's sample format (8/16/24/32-bit PCM, float),
so nothing is lost; reading a 3-minute track cut into 60 windows reads the track once, not 60 times.

item.meta: path, offset (first sample of the window at the codec's rate), window, valid and
valid_length (real samples in the window at the codec's rate; the rest is padding), rate (codec),
source_rate, source_frames, source_channels, read [first, end) in source frames; MUSDB adds split,
track, stem (grouped: stems, stem_files). A file whose header cannot be read is listed as one item
whose read fails with the reason (`listing_error`).

MUSDB layout: `<root>/<split>/<track>/{mixture,drums,bass,other,vocals}.wav` (.flac too), or a
split folder itself. By default (`group=True`) one sample per window holds the mixture and every
stem, so that a separation loop gets (mixture, stems) from one sample whatever the shuffling: it is
keyed `<split>_<track>_<window>`, has no label, and `read_bytes` returns an uncompressed tar of one
WAV excerpt per stem (`<stem>.wav`, in the source's stem order, mixture first); the windows are the
mixture's, and each stem's excerpt is read with that stem file's own header (meta `stems`, and per
stem its path and read span in `stem_files`). A track that lacks one of the stems lists its windows
as items whose read fails with the reason. The audio preprocessor decodes such an item into
(S, C, window) (pipeline.preprocess.audio.decode_stems), the encoder stores latents (S, *latent).
`group=False` gives the older layout: the mixture and each stem are separate samples, keyed
`<split>_<track>_<window>_<stem>` and ordered split, track, window, stem (mixture first), so the five
signals of a window are adjacent (same shard, except at shard edges); the label is the stem's
index (label_map: mixture 0, drums 1, bass 2, other 3, vocals 4). MUSDB18's .stem.mp4 files are not
readable by libsndfile: use MUSDB18-HQ (or convert with musdb's `stem2wav`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from ..registry import register_source
from .base import (
    NoInputsError,
    Source,
    SourceItem,
    extension_reason,
    find_relpaths,
    fingerprint_from_info,
    safe_key,
    skip,
    unique_keys,
)
from .listing import PARTITION_SCHEMA, Listing, MapFn, merge_partitions, serial_map

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".mp3"}
MUSDB_STEMS = ("mixture", "drums", "bass", "other", "vocals")
RESAMPLE_ZERO_CROSSINGS = 16  # context read around a window, >= the resampler's 10 (scipy's default)
DETECT_FILES = 64
PARTITION_FILES = 64  # audio files whose headers one listing task reads
DEFAULT_WINDOW = 2**17
DEFAULT_RATE = 44100

# soundfile subtype -> (dtype to read it losslessly, WAV subtype to carry it in the excerpt)
_CARRY = {
    "PCM_U8": ("int16", "PCM_U8"),
    "PCM_S8": ("int16", "PCM_16"),
    "PCM_16": ("int16", "PCM_16"),
    "PCM_24": ("int32", "PCM_24"),
    "PCM_32": ("int32", "PCM_32"),
    "FLOAT": ("float32", "FLOAT"),
    "DOUBLE": ("float64", "DOUBLE"),
}


class AudioListingError(OSError):
    """An audio file whose header could not be read when listing."""


def resampled_length(frames: int, source_rate: int, rate: int) -> int:
    """Samples at `rate` for `frames` at `source_rate` (scipy.signal.resample_poly's output length)."""
    g = math.gcd(source_rate, rate)
    return -(-frames * (rate // g) // (source_rate // g))


def window_offsets(length: int, window: int, hop: int) -> list[int]:
    """Window starts (at the codec rate) covering `length` samples; at least one."""
    if length <= window:
        return [0]
    count = -(-(length - window) // hop) + 1
    return [k * hop for k in range(count) if k * hop < length]


def read_span(offset: int, valid: int, frames: int, source_rate: int, rate: int) -> tuple[int, int]:
    """[first, end) source frames to read for a window: its frames plus resampler context, the
    first aligned so that it maps to a whole sample at `rate`."""
    if source_rate == rate:
        return offset, min(frames, offset + valid)
    g = math.gcd(source_rate, rate)
    up, down = rate // g, source_rate // g
    context = RESAMPLE_ZERO_CROSSINGS * -(-max(up, down) // up) + 2
    first = offset * down // up - context
    end = -(-(offset + valid) * down // up) + context
    first = max(0, first // down * down)
    return first, min(frames, end)


def audio_header(url: str) -> tuple[int, int, int, str]:
    """(frames, samplerate, channels, subtype) from the file's header."""
    import soundfile as sf

    with fsspec.open(url, "rb") as f, sf.SoundFile(f) as snd:
        return int(snd.frames), int(snd.samplerate), int(snd.channels), str(snd.subtype)


def window_items(
    url: str,
    names: tuple[str, ...],
    window: int,
    hop: int,
    rate: int,
    base_meta: dict[str, Any],
) -> list[tuple[str, dict[str, Any]]]:
    """(name for the key, meta) per window of one file; `names` prefix the window index."""
    try:
        frames, source_rate, channels, _ = audio_header(url)
    except Exception as err:  # noqa: BLE001 - a broken file must not stop the listing
        return [("/".join((*names, "000000")), base_meta | {"listing_error": f"{type(err).__name__}: {err}"})]
    length = resampled_length(frames, source_rate, rate)
    out = []
    for k, offset in enumerate(window_offsets(length, window, hop)):
        valid = max(0, min(window, length - offset))
        first, end = read_span(offset, valid, frames, source_rate, rate)
        meta = base_meta | {
            "offset": offset,
            "window": window,
            "valid": valid,
            "valid_length": valid,  # contract C6; the preprocessor sets it again from what it decoded
            "rate": rate,
            "source_rate": source_rate,
            "source_frames": frames,
            "source_channels": channels,
            "read": [first, end],
        }
        out.append(("/".join((*names, f"{k:06d}")), meta))
    return out


def read_excerpt(url: str, first: int, end: int) -> bytes:
    """Frames [first, end) of an audio file as a WAV in the file's own sample format."""
    import soundfile as sf

    with fsspec.open(url, "rb") as f, sf.SoundFile(f) as snd:
        dtype, subtype = _CARRY.get(snd.subtype, ("float32", "FLOAT"))
        first = min(first, snd.frames)  # a stem that ends before the window: an empty excerpt
        snd.seek(first)
        data = snd.read(max(0, end - first), dtype=dtype, always_2d=True)
        rate, channels = snd.samplerate, snd.channels
    out = io.BytesIO()
    with sf.SoundFile(out, "w", samplerate=rate, channels=channels, subtype=subtype, format="WAV") as dst:
        dst.write(data)
    return out.getvalue()


def _walk_files(fs, root: str, limit: int) -> list[str]:
    found: list[str] = []
    for dirpath, _, files in fs.walk(root):
        found.extend(f"{dirpath.rstrip('/')}/{f}" for f in sorted(files))
        if len(found) >= limit:
            break
    return found[:limit]


class _WindowedSource(Source):
    """Shared by the audio sources: segmentation settings and reading a window's excerpt."""

    modality = "audio"

    def __init__(self, window: int, hop: int | None, sample_rate: int):
        if window < 1 or (hop is not None and hop < 1) or sample_rate < 1:
            raise ValueError(f"window, hop and sample_rate must be positive ({window}, {hop}, {sample_rate})")
        self.window, self.hop, self.sample_rate = int(window), int(hop or window), int(sample_rate)

    @classmethod
    def options_from_policy(cls, policy: Any) -> dict[str, Any]:
        return {"window": policy.window, "hop": policy.hop, "sample_rate": policy.sample_rate}

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_listing": None}  # workers need no listing

    def read_bytes(self, item: SourceItem) -> bytes:
        if "listing_error" in item.meta:
            raise AudioListingError(f"unreadable audio file: {item.meta['listing_error']}")
        first, end = item.meta["read"]
        return read_excerpt(item.uri, int(first), int(end))

    def _segmentation(self) -> dict[str, Any]:
        return {"window": self.window, "hop": self.hop, "sample_rate": self.sample_rate}


@register_source("audio-folder")
class AudioFolderSource(_WindowedSource):
    """Every audio file under `root` (or one file), sorted by relative path, cut into windows.

    Labels come from class folders (`<root>/<class>/<file>`) when every file sits in one, as for
    image folders (labels="auto"), or always ("folders") or never ("none")."""

    def __init__(
        self,
        root: str,
        window: int = DEFAULT_WINDOW,
        hop: int | None = None,
        sample_rate: int = DEFAULT_RATE,
        labels: str = "auto",
    ):
        super().__init__(window, hop, sample_rate)
        self.root = str(root)
        self._listing: list[str] | None = None
        self.skipped: dict[str, int] = {}  # files under root that are not audio, by reason
        relpaths = self._relpaths()
        if not relpaths:
            raise NoInputsError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {self.root}")
        nested = all("/" in r for r in relpaths)
        self.labelled = labels == "folders" or (labels == "auto" and nested)
        self.classes = sorted({r.split("/", 1)[0] for r in relpaths}) if self.labelled else []

    @staticmethod
    def detect(path: str) -> bool:
        """Audio files and no images among the first files found, and not a MUSDB layout."""
        from .image_folder import IMAGE_EXTENSIONS

        if path.startswith("hf://datasets/"):  # a Hub dataset id (the hf source's), not a folder
            return False
        fs, p = fsspec.core.url_to_fs(path)
        if fs.isfile(p):
            return Path(p).suffix.lower() in AUDIO_EXTENSIONS
        if not fs.isdir(p) or MusdbSource.detect(path):
            return False
        suffixes = [Path(f).suffix.lower() for f in _walk_files(fs, p, DETECT_FILES)]
        return any(s in AUDIO_EXTENSIONS for s in suffixes) and not any(
            s in IMAGE_EXTENSIONS for s in suffixes
        )

    def _relpaths(self) -> list[str]:
        if self._listing is None:  # other files: counted by reason in self.skipped
            self._listing, self.skipped = find_relpaths(self.root, AUDIO_EXTENSIONS)
        return self._listing

    def list_partition(self, rels: list[str]) -> pa.Table:
        """The windows of some of the files (each header read once) as the listing's columns, with
        the `id` a repeated key is hashed on (url + window)."""
        fs, p = fsspec.core.url_to_fs(self.root)
        single = fs.isfile(p)
        index = {c: i for i, c in enumerate(self.classes)}
        columns: dict[str, list] = {n: [] for n in ("key", "id", "uri", "label", "fingerprint", "meta")}
        for rel in rels:
            path = p if single else f"{p.rstrip('/')}/{rel}"
            url = fs.unstrip_protocol(path)
            try:  # what --mode append compares: the file's size and mtime (one stat per file)
                fingerprint = fingerprint_from_info(fs.info(path))
            except OSError:
                fingerprint = None
            cls = rel.split("/", 1)[0] if self.labelled else None
            base = {"path": rel} | ({"class": cls} if cls is not None else {})
            stem = str(Path(rel).with_suffix(""))
            for name, meta in window_items(url, (stem,), self.window, self.hop, self.sample_rate, base):
                columns["key"].append(safe_key(name))
                columns["id"].append(f"{url}#{name}")
                columns["uri"].append(url)
                columns["label"].append(index[cls] if cls is not None else None)
                columns["fingerprint"].append(fingerprint)
                columns["meta"].append(json.dumps(meta, sort_keys=True))
        return pa.table(columns, schema=PARTITION_SCHEMA)

    def listing(self, limit: int | None = None, map_fn: MapFn | None = None) -> Listing:
        """Headers are read in partitions of PARTITION_FILES files (`map_fn`: Ray tasks or threads)."""
        rels = self._relpaths()
        parts = [(rels[i : i + PARTITION_FILES],) for i in range(0, len(rels), PARTITION_FILES)]
        listing = Listing(merge_partitions((map_fn or serial_map)(self.list_partition, parts)))
        return listing.limit(limit) if limit is not None else listing

    def list_items(self) -> list[SourceItem]:
        return self.listing().items()

    def label_map(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def describe(self) -> dict[str, Any]:
        out = {
            "kind": self.registry_name,
            "root": self.root,
            "labelled": self.labelled,
        } | self._segmentation()
        return out | ({"skipped": dict(sorted(self.skipped.items()))} if self.skipped else {})


def _items(rows: list[tuple[str, str, int | None, dict[str, Any]]]) -> list[SourceItem]:
    """SourceItems with tar-safe unique keys; the hash for a colliding key comes from url + window."""
    keys = unique_keys([r[0] for r in rows], ids=[f"{r[1]}#{r[0]}" for r in rows])
    return [
        SourceItem(key=k, uri=url, label=label, meta=meta)
        for k, (_, url, label, meta) in zip(keys, rows, strict=True)
    ]


def pack_stems(excerpts: list[tuple[str, bytes]]) -> bytes:
    """One read of a grouped MUSDB item: an uncompressed tar of `<stem>.wav` excerpts, in stem order,
    with fixed mtime/owner (the same excerpts give the same bytes, hence the same cache key)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for stem, data in excerpts:
            info = tarfile.TarInfo(f"{stem}.wav")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = "walloc"
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@register_source("musdb")
class MusdbSource(_WindowedSource):
    """MUSDB18-HQ-style stems (see the module docstring for the layout, keys and labels).

    group=True (default): one sample per window holding the mixture and every stem in `stems`
    (default: the stems that every track has, in MUSDB order; a track without one of the stems
    asked for lists its windows as error rows); group=False: one sample per stem and window
    (labelled by stem), whichever stems each track has."""

    def __init__(
        self,
        root: str,
        window: int = DEFAULT_WINDOW,
        hop: int | None = None,
        sample_rate: int = DEFAULT_RATE,
        split: str | None = None,
        stems: tuple[str, ...] | list[str] | None = None,
        group: bool = True,
    ):
        super().__init__(window, hop, sample_rate)
        self.root = str(root)
        self.stems = tuple(stems or MUSDB_STEMS)
        unknown = [s for s in self.stems if s not in MUSDB_STEMS]
        if unknown:
            raise ValueError(f"unknown stems {unknown}; MUSDB has {list(MUSDB_STEMS)}")
        if len(set(self.stems)) != len(self.stems):
            raise ValueError(f"stems repeat: {list(self.stems)}")
        self.split = split
        if not isinstance(group, bool):
            raise ValueError(f"group must be true or false, got {group!r}")
        self.group = group
        self._listing: list[tuple[str, str, str, str]] | None = None
        self.skipped: dict[str, int] = {}  # files under root that are not listed stems, by reason
        if not self._tracks():
            raise NoInputsError(f"no MUSDB tracks (<split>/<track>/mixture.wav) under {self.root}")
        if self.group and stems is None:  # every stem that every track has (rendered sets lack drums)
            per_track: dict[tuple[str, str], set[str]] = {}
            for split_, track, stem, _ in self._tracks():
                per_track.setdefault((split_, track), set()).add(stem)
            common = set.intersection(*per_track.values())
            self.stems = tuple(s for s in MUSDB_STEMS if s in common)
            for t in self._listing:
                if t[2] not in common:
                    skip(self.skipped, f"stem {t[2]} not in every track")
            self._listing = [t for t in self._listing if t[2] in common]

    @staticmethod
    def detect(path: str) -> bool:
        """A folder of track folders holding mixture.*, or of split folders of those (first few looked at)."""
        fs, p = fsspec.core.url_to_fs(path)
        if not fs.isdir(p):
            return False
        top = _subdirs(fs, p)[:8]
        if any(_mixture(fs, d) for d in top):
            return True
        return any(_mixture(fs, t) for d in top for t in _subdirs(fs, d)[:4])

    def _tracks(self) -> list[tuple[str, str, str, str]]:
        """(split, track, stem, url) for every stem file, in listing order (cached on the driver);
        every other file under the root is counted in self.skipped, by reason."""
        if self._listing is None:
            fs, p = fsspec.core.url_to_fs(self.root)
            root_is_split = any(_mixture(fs, d) for d in _subdirs(fs, p)[:8])
            splits = [p] if root_is_split else _subdirs(fs, p)
            skipped: dict[str, int] = {}
            if not root_is_split:
                skip(skipped, "not in a split folder", len(_plain_files(fs, p)))
            found = []
            for split_dir in splits:
                split = split_dir.rstrip("/").rsplit("/", 1)[-1]
                if self.split is not None and split != self.split:
                    skip(skipped, f"split {split} not asked for", _count_files(fs, split_dir))
                    continue
                skip(skipped, "not in a track folder", len(_plain_files(fs, split_dir)))
                for track_dir in _subdirs(fs, split_dir):
                    if _mixture(fs, track_dir) is None:
                        skip(skipped, "track folder without a mixture", _count_files(fs, track_dir))
                        continue
                    entries = fs.ls(track_dir, detail=True)
                    files = {Path(e["name"]).stem: e["name"] for e in entries}
                    track = track_dir.rstrip("/").rsplit("/", 1)[-1]
                    used = set()
                    for stem in self.stems:
                        if stem in files and Path(files[stem]).suffix.lower() in AUDIO_EXTENSIONS:
                            found.append((split, track, stem, fs.unstrip_protocol(files[stem])))
                            used.add(files[stem])
                    for e in entries:
                        if e["name"] not in used:
                            skip(skipped, *self._skip_reason(fs, e))
            self._listing, self.skipped = found, skipped
        return self._listing

    def _skip_reason(self, fs, entry: dict[str, Any]) -> tuple[str, int]:
        """Why a track folder's entry is not one of the stems listed, and how many files it holds."""
        name = entry["name"]
        if entry["type"] == "directory":
            return "in a folder inside a track folder", _count_files(fs, name)
        stem = Path(name).stem
        if Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
            return extension_reason(name), 1
        if stem not in MUSDB_STEMS:
            return f"not a MUSDB stem ({stem})", 1
        if stem not in self.stems:
            return f"stem {stem} not asked for", 1
        return f"a second {stem} file in its track folder", 1

    def list_items(self) -> list[SourceItem]:
        return self._grouped_items() if self.group else self._stem_items()

    def _stem_items(self) -> list[SourceItem]:
        per_track: dict[tuple[str, str], list[list[tuple[str, str, int, dict[str, Any]]]]] = {}
        for split, track, stem, url in self._tracks():
            base = {"path": f"{split}/{track}/{Path(url).name}", "split": split, "track": track, "stem": stem}
            windows = window_items(url, (split, track), self.window, self.hop, self.sample_rate, base)
            label = MUSDB_STEMS.index(stem)
            per_track.setdefault((split, track), []).append(
                [(f"{name}/{stem}", url, label, meta) for name, meta in windows]
            )
        rows: list[tuple[str, str, int | None, dict[str, Any]]] = []
        for stems in per_track.values():  # window-major, stems in MUSDB order within a window
            for k in range(max(len(w) for w in stems)):
                rows.extend(w[k] for w in stems if k < len(w))
        return _items(rows)

    def _grouped_items(self) -> list[SourceItem]:
        """One item per window of each track's mixture, carrying every stem's file and read span."""
        files: dict[tuple[str, str], dict[str, str]] = {}
        for split, track, stem, url in self._tracks():
            files.setdefault((split, track), {})[stem] = url
        rows: list[tuple[str, str, int | None, dict[str, Any]]] = []
        prints: list[str | None] = []
        for (split, track), urls in files.items():
            base = {"path": f"{split}/{track}", "split": split, "track": track, "stems": list(self.stems)}
            missing = [s for s in self.stems if s not in urls]
            anchor = urls.get("mixture") or next(iter(urls.values()))
            track_url = anchor.rsplit("/", 1)[0]
            windows = window_items(anchor, (split, track), self.window, self.hop, self.sample_rate, base)
            headers = {stem: _header_or_error(url) for stem, url in urls.items()}
            broken = {s: h for s, h in headers.items() if isinstance(h, str)}
            print_ = _track_fingerprint(urls)
            for name, meta in windows:
                if missing and "listing_error" not in meta:
                    meta = meta | {"listing_error": f"track {split}/{track} has no {', '.join(missing)} stem"}
                elif broken and "listing_error" not in meta:
                    stem, reason = next(iter(broken.items()))
                    meta = meta | {"listing_error": f"{stem}: {reason}"}
                if "listing_error" not in meta:
                    meta = meta | {
                        "stem_files": _stem_reads(urls, headers, self.stems, meta, self.sample_rate)
                    }
                rows.append((name, track_url, None, meta))
                prints.append(print_)
        items = _items(rows)
        return [dataclasses.replace(it, fingerprint=f) for it, f in zip(items, prints, strict=True)]

    def read_bytes(self, item: SourceItem) -> bytes:
        if not self.group:
            return super().read_bytes(item)
        if "listing_error" in item.meta:
            raise AudioListingError(f"unreadable MUSDB track: {item.meta['listing_error']}")
        stems = item.meta["stem_files"]
        return pack_stems(
            [(s, read_excerpt(stems[s]["url"], *map(int, stems[s]["read"]))) for s in item.meta["stems"]]
        )

    def label_map(self) -> dict[str, int]:
        return {} if self.group else {stem: i for i, stem in enumerate(MUSDB_STEMS)}

    def grouped_stems(self) -> tuple[str, ...] | None:
        """The stems every sample holds (mixture first), or None when each stem is its own sample."""
        return self.stems if self.group else None

    def describe(self) -> dict[str, Any]:
        out = {
            "kind": self.registry_name,
            "root": self.root,
            "split": self.split,
            "stems": list(self.stems),
            "group": self.group,
        } | self._segmentation()
        return out | ({"skipped": dict(sorted(self.skipped.items()))} if self.skipped else {})


def _header_or_error(url: str) -> tuple[int, int, int, str] | str:
    try:
        return audio_header(url)
    except Exception as err:  # noqa: BLE001 - a broken stem makes its track's windows error rows
        return f"{type(err).__name__}: {err}"


def _stem_reads(
    urls: dict[str, str], headers: dict[str, Any], stems: tuple[str, ...], meta: dict[str, Any], rate: int
) -> dict[str, dict[str, Any]]:
    """Per stem: its file and the source frames under this window (each stem's own rate and length)."""
    out = {}
    for stem in stems:
        frames, source_rate, channels, _ = headers[stem]
        length = resampled_length(frames, source_rate, rate)
        valid = max(0, min(meta["window"], length - meta["offset"]))
        first, end = read_span(meta["offset"], valid, frames, source_rate, rate)
        out[stem] = {"url": urls[stem], "read": [first, end], "source_rate": source_rate, "valid": valid}
    return out


def _track_fingerprint(urls: dict[str, str]) -> str | None:
    """Changes when any stem file of the track changes (what --mode append compares)."""
    parts = []
    for stem in sorted(urls):
        try:
            fs, path = fsspec.core.url_to_fs(urls[stem])
            token = fingerprint_from_info(fs.info(path))
        except Exception:  # noqa: BLE001 - unknown: never seen as changed
            return None
        if token is None:
            return None
        parts.append(f"{stem}={token}")
    return ";".join(parts)


def _plain_files(fs, path: str) -> list[str]:
    return [e["name"] for e in fs.ls(path, detail=True) if e["type"] != "directory"]


def _count_files(fs, path: str) -> int:
    return len(fs.find(path))


def _subdirs(fs, path: str) -> list[str]:
    return sorted(e["name"] for e in fs.ls(path, detail=True) if e["type"] == "directory")


def _mixture(fs, track_dir: str) -> str | None:
    for ext in sorted(AUDIO_EXTENSIONS):
        candidate = f"{track_dir.rstrip('/')}/mixture{ext}"
        if fs.isfile(candidate):
            return candidate
    return None
