#!/usr/bin/env python
"""Loader throughput, side by side in one run on the same cores: latent shards vs JPEG shards.

    latent WebDataset   pipeline.loaders.LatentWebDataset: read shard (sha256-checked), parse .npy,
                        dequantize -> (B, 12, 32, 32) float
    ..., int8           the same with output="int": raw int8 latents, dequantized by the consumer
                        (e.g. on the GPU); a quarter of the bytes to hand from workers to the trainer
    JPEG WebDataset     the usual pixel pipeline: webdataset + PIL decode, resize the shorter side
                        to --side (bicubic, antialiased), centre crop, to float -> (B, 3, side, side)
    ..., draft          the same with PIL's JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8
                        scale first): a faster pixel pipeline than the usual one, for a fair ratio
    Zarr random access  pipeline.loaders.LatentZarrDataset with a shuffled RandomSampler (batched reads)

Same source images for all three (the setup encodes them with the pipeline and writes the JPEG
shards; not timed), same batch size, each with N DataLoader workers. Per configuration: one warm-up
pass, then --repeats timed passes (each --epochs-per-pass epochs over every sample, in one
DataLoader, so forking the workers is a small share); the median is reported. Figures:
  samples/s           wall clock
  per core            samples/s / max(1, N)  (N workers do the work; with N=0 the main process does)
  per CPU-s           samples per CPU-second actually spent (main process + reaped workers, from
                      getrusage): robust to other jobs sharing the machine, unlike the wall figures
torch runs single-threaded in every process, so one worker is one core.

    python benchmarks/loader_throughput.py                        # data/imagenet-mini/train, N = 0 1 2
    python benchmarks/loader_throughput.py --images /data/imagenet/train --limit 5000 --workers 0 4 8
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.config import DEFAULT_IMAGE_CODEC, EncodeConfig  # noqa: E402
from pipeline.learning.data import image_files  # noqa: E402
from pipeline.loaders import LatentWebDataset, LatentZarrDataset  # noqa: E402
from pipeline.sinks import SinkSpec  # noqa: E402


@dataclass
class Row:
    loader: str
    workers: int
    samples: int
    seconds: float
    cpu_seconds: float

    @property
    def per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def per_core(self) -> float:
        return self.per_s / max(1, self.workers)

    @property
    def per_cpu_s(self) -> float:
        return self.samples / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


def encode(images: str, output: Path, fmt: str, limit: int, shard_size: int, codec: str) -> str:
    from pipeline.runtime import run_encode

    cfg = EncodeConfig(
        input=images,
        sink=SinkSpec(output=str(output), format=fmt, shard_size=shard_size),
        codec=codec,
        limit=limit,
        mode="resume",
        progress=False,
    )
    summary = run_encode(cfg)
    if summary.failed_shards:
        raise RuntimeError(summary.format())
    return str(output)


def write_jpeg_shards(files: list[Path], root: Path, shard_size: int) -> list[str]:
    """The original JPEG bytes (as ImageNet shards hold them) + class index, `shard_size` per tar."""
    root.mkdir(parents=True, exist_ok=True)
    classes = {c: i for i, c in enumerate(sorted({f.parent.name for f in files}))}
    urls = [str(root / f"jpeg-{k:06d}.tar") for k in range(-(-len(files) // shard_size))]
    if all(Path(u).exists() for u in urls):
        return urls
    with wds.ShardWriter(str(root / "jpeg-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for i, f in enumerate(files):
            sink.write({"__key__": f"{i:08d}", "jpg": f.read_bytes(), "cls": classes[f.parent.name]})
    return urls


class PixelTransform:
    """bytes -> (3, side, side) float in [-0.5, 0.5]: PIL decode, shorter side to `side`, centre crop."""

    def __init__(self, side: int, draft: bool = False):
        self.side, self.draft = side, draft

    def __call__(self, sample: dict) -> tuple[torch.Tensor, int]:
        with Image.open(io.BytesIO(sample["jpg"])) as im:
            if self.draft:  # libjpeg's DCT-domain downscale (1/2, 1/4, 1/8) to at least side x side
                im.draft("RGB", (self.side, self.side))
            img = im.convert("RGB")
        w, h = img.size
        s = self.side / min(w, h)
        img = img.resize(
            (max(self.side, round(w * s)), max(self.side, round(h * s))), Image.Resampling.BICUBIC
        )
        left, top = (img.width - self.side) // 2, (img.height - self.side) // 2
        img = img.crop((left, top, left + self.side, top + self.side))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()).float() / 255 - 0.5
        return x, int(sample["cls"])


def jpeg_dataset(urls: list[str], side: int, batch: int, draft: bool = False) -> wds.WebDataset:
    return (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=wds.split_by_node)
        .map(PixelTransform(side, draft))
        .batched(batch, partial=True)
    )


class Repeat(torch.utils.data.IterableDataset):
    """`times` epochs of an iterable dataset in one DataLoader pass (workers start once per pass)."""

    def __init__(self, dataset, times: int):
        super().__init__()
        self.dataset, self.times = dataset, times

    def __iter__(self):
        for epoch in range(self.times):
            if hasattr(self.dataset, "set_epoch"):  # LatentWebDataset: a new epoch, as a training loop does
                self.dataset.set_epoch(epoch)
            yield from self.dataset


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)


def cpu_now() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_pass(make_loader) -> tuple[int, float, float]:
    loader = make_loader()
    c0, t0 = cpu_now(), time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    seconds = time.perf_counter() - t0
    del loader  # workers exit and are reaped: their CPU time lands in RUSAGE_CHILDREN
    time.sleep(0.05)
    return n, seconds, cpu_now() - c0


def measure(name: str, workers: int, make_loader, repeats: int) -> Row:
    one_pass(make_loader)  # warm-up: page cache, imports in workers
    runs = [one_pass(make_loader) for _ in range(repeats)]
    n = runs[0][0]
    return Row(name, workers, n, statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs))


def format_table(rows: list[Row]) -> str:
    head = f"{'loader':<24}{'workers':>8}{'samples':>9}{'samples/s':>12}{'per core':>11}{'per CPU-s':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.loader:<24}{r.workers:>8}{r.samples:>9}{r.per_s:>12.1f}{r.per_core:>11.1f}{r.per_cpu_s:>11.1f}"
        )
    by = {(r.loader, r.workers): r for r in rows}
    for w in sorted({r.workers for r in rows}):
        lat = by.get(("latent WebDataset", w))
        for base in ("JPEG WebDataset", "JPEG WebDataset, draft"):
            jpg = by.get((base, w))
            if lat and jpg:
                lines.append(
                    f"latent / {base}, {w} workers: {lat.per_core / jpg.per_core:.1f}x per core (wall), "
                    f"{lat.per_cpu_s / jpg.per_cpu_s:.1f}x per CPU-second"
                )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="data/imagenet-mini/train", help="image folder (default: %(default)s)")
    p.add_argument("--out", default="out/bench-loaders", help="setup outputs go here (default: %(default)s)")
    p.add_argument("--limit", type=int, default=360, help="images used (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=45, help="samples per shard (default: %(default)s)")
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers (default: 0 1 2)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument(
        "--side", type=int, default=64, help="pixel model input side, same budget (default: %(default)s)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes per configuration (default: %(default)s)"
    )
    p.add_argument("--codec", default=DEFAULT_IMAGE_CODEC, help="(default: %(default)s)")
    p.add_argument(
        "--epochs-per-pass",
        type=int,
        default=5,
        help="epochs over the images in one DataLoader pass, so worker start-up is amortised "
        "(default: %(default)s)",
    )
    p.add_argument("--no-zarr", action="store_true", help="skip the Zarr random-access rows")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = image_files(args.images)[: args.limit]
    if not files:
        raise SystemExit(f"no images under {args.images}")
    out = Path(args.out)
    print(f"setup: {len(files)} images from {args.images} -> {out} (not timed)", flush=True)
    lat_root = encode(args.images, out / "latents-wds", "webdataset", len(files), args.shard_size, args.codec)
    zarr_root = (
        None
        if args.no_zarr
        else encode(args.images, out / "latents-zarr", "zarr", len(files), args.shard_size, args.codec)
    )
    jpeg_urls = write_jpeg_shards(files, out / "jpeg-wds", args.shard_size)
    import ray

    if ray.is_initialized():
        ray.shutdown()  # its processes must not share the cores (or the CPU accounting) with the timing
    torch.set_num_threads(1)
    jpeg_bytes = sum(Path(u).stat().st_size for u in jpeg_urls)
    lat_bytes = sum(p.stat().st_size for p in Path(lat_root).glob("shard-*.tar"))
    print(
        f"shards: latent {lat_bytes / 1e6:.1f} MB, JPEG {jpeg_bytes / 1e6:.1f} MB; batch {args.batch_size}, "
        f"pixel side {args.side}; {args.repeats} timed passes per row (median)",
        flush=True,
    )

    rows, k = [], args.epochs_per_pass
    for w in args.workers:
        dl = dict(num_workers=w, worker_init_fn=_init_worker)
        for label, options in (("latent WebDataset", {}), ("latent WebDataset, int8", {"output": "int"})):
            rows.append(
                measure(
                    label,
                    w,
                    lambda dl=dl, options=options: torch.utils.data.DataLoader(
                        Repeat(
                            LatentWebDataset(
                                lat_root, batch_size=args.batch_size, shuffle_shards=False, **options
                            ),
                            k,
                        ),
                        batch_size=None,
                        **dl,
                    ),
                    args.repeats,
                )
            )
        rows.append(
            measure(
                "JPEG WebDataset",
                w,
                lambda dl=dl: torch.utils.data.DataLoader(
                    Repeat(jpeg_dataset(jpeg_urls, args.side, args.batch_size), k), batch_size=None, **dl
                ),
                args.repeats,
            )
        )
        rows.append(
            measure(
                "JPEG WebDataset, draft",
                w,
                lambda dl=dl: torch.utils.data.DataLoader(
                    Repeat(jpeg_dataset(jpeg_urls, args.side, args.batch_size, draft=True), k),
                    batch_size=None,
                    **dl,
                ),
                args.repeats,
            )
        )
        if zarr_root:
            ds = LatentZarrDataset(zarr_root)
            sampler = torch.utils.data.RandomSampler(
                ds, num_samples=k * len(ds), generator=torch.Generator().manual_seed(0)
            )
            rows.append(
                measure(
                    "Zarr random access",
                    w,
                    lambda dl=dl, ds=ds, sampler=sampler: torch.utils.data.DataLoader(
                        ds,
                        batch_size=args.batch_size,
                        sampler=sampler,
                        **dl,  # collates Batches
                    ),
                    args.repeats,
                )
            )
        print(f"workers={w} done", flush=True)
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
