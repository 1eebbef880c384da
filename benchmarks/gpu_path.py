#!/usr/bin/env python
"""The GPU path side by side (issue 9): does decoding on the GPU keep the GPU fed?

One run, one device, the same JPEG bytes held in memory (real photos from data/photos, else the
bundled samples, resized to 500x375 and saved at quality 90, cycled to --count):

    PIL decode + resize + crop      the CPU path (preprocess.image.decode_image), 1 process and
                                    --workers processes (default: all cores)
    device decode alone             torchvision.io.decode_jpeg(list, device) (nvJPEG on CUDA)
    device decode + resize + crop   preprocess.image_device (the --decode gpu path), batched
    reference encoder               walloc 1.2.1 (RGB, J=3, 12 channels, fp32), same weights as ours
    our encoder                     pipeline.codec, same weights
    device decode + our encoder     bytes -> int8 latents on the host (what an encoder actor does)
    full pipeline --decode gpu/cpu  run_encode on a local Ray writing WebDataset shards to local disk
                                    (steady state: shard commit times, first to last)

plus the GPU-vs-CPU latent agreement on the same pixels (bundled codec, target < 1e-4 mismatches
except rounding ties) and how far the device pixels are from the CPU path's. Targets: our encoder
>= 3x the reference; decode+encode >= 70% of decode+resize alone; full pipeline gpu >= 3x cpu.

    python benchmarks/gpu_path.py                          # on a GPU node (~2-3 min on an H100)
    python benchmarks/gpu_path.py --device cpu --count 16 --pipeline-count 16 --size 64   # smoke run

Needs torchvision for the CUDA rows (the CUDA image has it) and walloc 1.2.1 for the reference row
(`make bench`); rows whose dependency is missing say so. Timings are medians of --repeats runs after
one warm-up.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from pipeline.preprocess.image import ImagePolicy, decode_image  # noqa: E402
from pipeline.preprocess.image_device import (  # noqa: E402
    DeviceDecodeSpec,
    DeviceImagePreprocessor,
    decode_jpegs,
    torchvision_io,
)

TARGETS = {"encoder_vs_reference": 3.0, "decode_encode_vs_decode": 0.70, "pipeline_gpu_vs_cpu": 3.0}
MISMATCH_TARGET = 1e-4
PHOTO_EXTS = {".jpg", ".jpeg", ".png"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run of the same code)")
    p.add_argument("--input", default=None, help="photo folder (default data/photos, else the samples)")
    p.add_argument("--images", type=int, default=256, help="distinct photos (default 256, fewer if absent)")
    p.add_argument("--count", type=int, default=4096, help="JPEGs in memory, cycled (default 4096)")
    p.add_argument("--batch", type=int, default=256, help="images per decode / encode call (default 256)")
    p.add_argument("--size", type=int, default=256, help="target side, center crop (default 256)")
    p.add_argument("--workers", type=int, default=None, help="PIL processes (default: all cores)")
    p.add_argument("--pipeline-count", type=int, default=16384, help="files for the Ray runs (0: skip)")
    p.add_argument(
        "--shard-size",
        type=int,
        default=128,
        help="images per shard in the Ray runs (default 128: many more shards than cores, so that the "
        "steady state spans several waves of CPU decode tasks)",
    )
    p.add_argument("--no-warmup", action="store_true", help="no one-shard warm-up of the Ray runs")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    return p.parse_args(argv)


# --- inputs ---------------------------------------------------------------------------------------


def photo_paths(folder: str | None) -> list[Path]:
    candidates = (
        [Path(folder)] if folder else [ROOT / "data" / "photos", ROOT / "pipeline" / "samples" / "images"]
    )
    for c in candidates:
        paths = sorted(p for p in c.rglob("*") if p.suffix.lower() in PHOTO_EXTS)
        if paths:
            return paths
    raise SystemExit(f"no photos under {candidates}")


def make_jpegs(paths: list[Path], images: int, count: int) -> list[bytes]:
    """Photos resized to 500x375 (375x500 portrait), JPEG q90, cycled to `count` byte strings."""
    from PIL import Image

    out = []
    for p in paths[:images]:
        img = Image.open(p).convert("RGB")
        img = img.resize((500, 375) if img.width >= img.height else (375, 500), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(count)]


# --- timing ---------------------------------------------------------------------------------------


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up (device synchronised)."""

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


_POLICY: ImagePolicy | None = None


def _pil_worker(chunk: list[bytes]) -> int:
    for data in chunk:
        decode_image(data, _POLICY)
    return len(chunk)


def pil_rate(jpegs: list[bytes], policy: ImagePolicy, processes: int, repeats: int) -> float:
    """Images/s of the CPU path on `processes` processes (fork: the JPEG bytes are inherited)."""
    global _POLICY
    _POLICY = policy
    if processes == 1:
        return len(jpegs) / timed(lambda: _pil_worker(jpegs), "cpu", repeats)
    chunks = batches(jpegs, max(1, len(jpegs) // (processes * 8)))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return len(jpegs) / timed(lambda: sum(pool.map(_pil_worker, chunks)), "cpu", repeats)


# --- the rows -------------------------------------------------------------------------------------


def encoder_rows(args, device: str) -> tuple[dict, torch.nn.Module]:
    """Reference vs our encoder on the same weights and batch; our codec is returned for reuse."""
    config = dict(channels=3, J=3, Ne=None, Nd=768, latent_dim=12, latent_bits=8, lightweight_encode=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen) - 0.5
    rows: dict = {}
    try:
        import _reference as R

        ref = R.build_reference("2d", config, seed=0)
        R.rescale_encoder(ref, x[:8])
        ours = R.to_ours(ref, config).to(device).freeze()
        ref, xd = ref.to(device), x.to(device)
        rows["reference encoder"] = args.batch / timed(
            lambda: R.reference_encode(ref, xd), device, args.repeats
        )
    except ImportError as err:
        rows["reference encoder"] = f"not installed ({str(err)[:60]}...; make bench)"
        from pipeline.codec import CodecConfig, build

        ours = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=768)).to(device).freeze()
        xd = x.to(device)
    rows["our encoder"] = args.batch / timed(lambda: ours.encode(xd), device, args.repeats)
    return rows, ours


def device_rows(args, jpegs: list[bytes], pre: DeviceImagePreprocessor, codec, device: str) -> dict:
    spec = pre.spec
    parts = batches(jpegs, args.batch)
    rows = {}

    def decode_only():
        for part in parts:
            decode_jpegs(part, spec)

    def decode_resize():
        for part in parts:
            pre.decode_batch(part)

    def decode_encode():
        for part in parts:
            pixels = torch.stack([r.array for r in pre.decode_batch(part)])
            codec.encode(pre.codec_input(pixels)).cpu()  # int8 latents to the host

    rows["device decode alone"] = len(jpegs) / timed(decode_only, device, args.repeats)
    rows["device decode + resize + crop"] = len(jpegs) / timed(decode_resize, device, args.repeats)
    rows["device decode + our encoder -> host int8"] = len(jpegs) / timed(decode_encode, device, args.repeats)
    return rows


def agreement_rows(jpegs: list[bytes], pre: DeviceImagePreprocessor, device: str, n: int = 64) -> dict:
    """Latents of the bundled codec on device vs CPU (same pixels); device pixels vs the CPU path's."""
    from pipeline.codec import load
    from pipeline.codec.agreement import device_agreement

    sample = list(dict.fromkeys(jpegs))[:n]  # distinct photos
    decoded = pre.decode_batch(sample)
    pixels = torch.stack([r.array for r in decoded])
    agreement = device_agreement(load("rgb-16x-klt"), pre.codec_input(pixels), device=device)
    cpu = torch.stack([torch.from_numpy(decode_image(d, pre.policy).array) for d in sample])
    diff = (pixels.cpu().to(torch.int16) - cpu.to(torch.int16)).abs()
    return {
        "latents": agreement.to_dict(),
        "latents_text": agreement.format(),
        "pixels_vs_cpu_path": {
            "images": len(sample),
            "differing_fraction": float((diff > 0).float().mean()),
            "mean_abs_diff": float(diff.float().mean()),
            "max_abs_diff": int(diff.max()),
        },
    }


def pipeline_rows(args, jpegs: list[bytes], device: str, tmp: Path) -> dict:
    """The full Ray pipeline (WebDataset on local disk), --decode gpu then --decode cpu."""
    import ray
    from pipeline_vs_bare import steady_rate

    from pipeline.config import EncodeConfig, ImageSettings, RayConfig
    from pipeline.manifest import MARKERS
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    folder = tmp / "jpegs" / "train" / "photos"
    folder.mkdir(parents=True)
    for i in range(args.pipeline_count):
        (folder / f"{i:07d}.jpg").write_bytes(jpegs[i % len(jpegs)])
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    on_gpu = device.startswith("cuda")

    def config(decode: str, name: str, limit: int | None = None) -> EncodeConfig:
        return EncodeConfig(
            input=str(folder.parent.parent),
            sink=SinkSpec(output=str(tmp / name), shard_size=args.shard_size),
            image=ImageSettings(size=args.size),
            mode="overwrite",
            limit=limit,
            ray=RayConfig(
                batch_size=args.batch,
                decode=decode,
                decode_device=None if on_gpu or decode == "cpu" else "cpu",
                num_gpus_per_worker=1.0 if on_gpu else 0.0,
            ),
            progress=False,
        )

    for decode in () if args.no_warmup else ("gpu", "cpu"):  # one shard each: neither pays Ray's first start
        run_encode(config(decode, f"warmup-{decode}", limit=args.shard_size))
    rows = {}
    for decode in ("gpu", "cpu"):
        cfg = config(decode, f"out-{decode}")
        started = time.perf_counter()
        summary = run_encode(cfg)
        wall = time.perf_counter() - started
        markers = sorted((Path(cfg.output) / MARKERS).glob("*.json"))
        stamps = [(p.stat().st_mtime, json.loads(p.read_text())["stats"]["samples"]) for p in markers]
        rate, span = steady_rate(stamps)
        rows[f"full pipeline --decode {decode}"] = {
            "rate": rate,
            "wall_s": wall,
            "wall_rate": summary.written / wall if wall > 0 else float("nan"),
            "written": summary.written,
            "errors": summary.errors,
            "decode": summary.decode,
        }
        shutil.rmtree(cfg.output, ignore_errors=True)
    return rows


# --- report ---------------------------------------------------------------------------------------


def _rate(v) -> float | None:
    if isinstance(v, dict):
        v = v.get("rate")
    return v if isinstance(v, float) else None


def table(results: dict) -> str:
    lines = ["| stage | images/s | note |", "|---|---|---|"]
    for name, value in results["rows"].items():
        rate = _rate(value)
        note = ""
        if isinstance(value, dict):  # a Ray run
            note = f"steady state; {value['wall_rate']:,.0f}/s over {value['wall_s']:.1f} s incl. start-up"
        lines.append(f"| {name} | {rate:,.0f} | {note} |" if rate is not None else f"| {name} | {value} | |")
    return "\n".join(lines)


def judge(results: dict, device: str) -> list[str]:
    r = results["rows"]

    def ratio(a: str, b: str) -> float | None:
        x, y = _rate(r.get(a)), _rate(r.get(b))
        return x / y if x is not None and y else None

    checks = [
        (
            "our encoder / reference",
            ratio("our encoder", "reference encoder"),
            TARGETS["encoder_vs_reference"],
        ),
        (
            "decode+encode / decode+resize",
            ratio("device decode + our encoder -> host int8", "device decode + resize + crop"),
            TARGETS["decode_encode_vs_decode"],
        ),
        (
            "pipeline gpu / cpu",
            ratio("full pipeline --decode gpu", "full pipeline --decode cpu"),
            TARGETS["pipeline_gpu_vs_cpu"],
        ),
    ]
    lines = []
    smoke = not device.startswith("cuda")
    for name, value, target in checks:
        if value is None:
            lines.append(f"{name:32s} n/a (row not measured)")
            continue
        verdict = "(cpu smoke run: not judged)" if smoke else ("PASS" if value >= target else "FAIL")
        lines.append(f"{name:32s} {value:6.2f}x   target >= {target:g}x   {verdict}")
    lat = results["agreement"]["latents"]
    ok = lat["other_mismatches"] == 0 and lat["mismatch_rate"] < MISMATCH_TARGET
    lines.append(
        f"{'GPU vs CPU latents':32s} {results['agreement']['latents_text']}   target < {MISMATCH_TARGET:g} "
        f"except ties   {'PASS' if ok else 'FAIL'}"
    )
    px = results["agreement"]["pixels_vs_cpu_path"]
    lines.append(
        f"{'device pixels vs CPU path':32s} {px['differing_fraction']:.2%} of values differ, mean |diff| "
        f"{px['mean_abs_diff']:.3f}, max {px['max_abs_diff']} (another IDCT and resampler: latents of "
        "--decode gpu and --decode cpu differ accordingly)"
    )
    return lines


def environment(device: str, backend: str, args) -> dict:
    env = {
        "device": torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else platform.processor() or "cpu",
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "decode_backend": backend,
        "batch": args.batch,
        "size": args.size,
    }
    tvio = torchvision_io()
    if tvio is not None:
        import torchvision

        env["torchvision"] = torchvision.__version__
    return env


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = args.device
    spec = DeviceDecodeSpec.for_device(device)  # fails here, clearly, without a GPU or torchvision
    policy = ImagePolicy(size=args.size)
    pre = DeviceImagePreprocessor(policy, spec=spec)
    paths = photo_paths(args.input)
    jpegs = make_jpegs(paths, args.images, args.count)
    workers = args.workers or os.cpu_count() or 1
    results: dict = {"environment": environment(device, spec.backend, args), "rows": {}}
    env = results["environment"]
    print(f"device {env['device']}, {env['cpu_cores']} cores, torch {env['torch']}, decode {spec.backend}")
    print(f"{len(jpegs)} JPEGs in memory ({len(set(jpegs))} photos, 500x375 q90) -> {args.size}x{args.size}")

    rows = results["rows"]
    rows["PIL decode + resize + crop, 1 process"] = pil_rate(jpegs[: min(len(jpegs), 512)], policy, 1, 1)
    rows[f"PIL decode + resize + crop, {workers} processes"] = pil_rate(jpegs, policy, workers, args.repeats)
    encoders, ours = encoder_rows(args, device)
    rows.update(device_rows(args, jpegs, pre, ours, device))
    rows.update(encoders)
    results["agreement"] = agreement_rows(jpegs, pre, device)
    if args.pipeline_count > 0:
        tmp = Path(tempfile.mkdtemp(prefix="walloc-gpu-path-"))
        try:
            rows.update(pipeline_rows(args, jpegs, device, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(results))
    print()
    results["targets"] = judge(results, device)
    print("\n".join(results["targets"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
