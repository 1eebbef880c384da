"""Encode throughput of the reference (walloc 1.2.1) and this library, side by side.

One process, one thread count, the same weights: the reference codec is built with a random
initialisation, its encoder rescaled so that latents span the quantizer's range (as in the
conformance vectors), and converted with `pipeline.codec.from_reference`. Both encoders then see
the same batch; the script checks that the latents are identical (mismatches are counted, and
those where the reference's companded value lies within 1e-3 of a rounding boundary, where a
different summation order may round the other way, separately) and times:

    2-D  RGB images (default 256x256, J=3, 12 latents, 1x1 encoder, batch 64): encode, and the
         wavelet packet analysis / synthesis alone
    1-D  stereo audio (default 16 x 2 x 2^17 samples, J=8, 32 latents, 1x1 encoder): the same

Figures are medians of --repeats timed runs after a warm-up run. A markdown table (for the README)
comes last; --json writes everything machine-readable.

    .venv/bin/python benchmarks/encode_speed.py                 # the README configuration
    .venv/bin/python benchmarks/encode_speed.py --quick         # a smoke run (seconds)
    .venv/bin/python benchmarks/encode_speed.py --threads 1 --json out/speed.json
    .venv/bin/python benchmarks/encode_speed.py --device auto    # on the GPU when there is one

Both sides run in the same process with the same torch.set_num_threads; on CPUs our encoder spreads
a batch's images over that many single-threaded workers (wavelets.batch_parallel). Timings on a
shared machine are noisy: other processes on the same cores slow everything, multi-threaded code
most; look at the per-run times in --json, and compare runs made under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _reference as R  # noqa: E402

AUDIO_RATE = 44100
STAGES = (("encode", "encode"), ("analysis (WPT)", "analysis"), ("synthesis (inverse WPT)", "synthesis"))
BOUNDARY = 1e-3  # |companded - (k + 0.5)| below this: a rounding tie that summation order may flip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="cpu (default), cuda, or auto: cuda if available",
    )
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--J", type=int, default=3, help="2-D wavelet levels (default 3)")
    p.add_argument("--latent-dim", type=int, default=12, help="2-D latent channels (default 12)")
    p.add_argument("--audio-batch", type=int, default=16, help="audio clips per batch (default 16)")
    p.add_argument("--audio-length", type=int, default=1 << 17, help="samples per clip (default 2^17)")
    p.add_argument("--audio-J", type=int, default=8, help="1-D wavelet levels (default 8)")
    p.add_argument("--audio-latent-dim", type=int, default=32, help="1-D latent channels (default 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median; default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--quick", action="store_true", help="small sizes and 2 repeats: a smoke run")
    p.add_argument("--no-2d", dest="run_2d", action="store_false", help="skip the image benchmark")
    p.add_argument("--no-1d", dest="run_1d", action="store_false", help="skip the audio benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.repeats = min(args.size, 128), min(args.batch, 8), min(args.repeats, 2)
        args.audio_batch, args.audio_length = min(args.audio_batch, 2), min(args.audio_length, 1 << 15)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def timed(fn, args: argparse.Namespace) -> list[float]:
    """Wall times of fn() over args.repeats runs, after args.warmup runs (seconds)."""

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        fn()
    sync()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def latent_agreement(ref, ref_latents: torch.Tensor, ours: torch.Tensor, X: torch.Tensor) -> dict:
    """Compare quantized latents; a mismatch at a rounding tie of the reference is 'boundary'."""
    companded = ref.encoder[:-1](X)  # 1x1 conv + ToUniform: the value the reference rounds
    mismatch = ref_latents != ours.to(ref_latents.dtype)
    tie = (companded - companded.floor() - 0.5).abs() < BOUNDARY
    n = mismatch.numel()
    count, boundary = int(mismatch.sum()), int((mismatch & tie).sum())
    return {
        "latents": n,
        "mismatches": count,
        "mismatch_rate": count / n,
        "boundary_mismatches": boundary,
        "other_mismatches": count - boundary,
        "max_abs_difference": int((ref_latents - ours.to(ref_latents.dtype)).abs().max()),
    }


def _compare(ref, ours, x: torch.Tensor, args: argparse.Namespace) -> tuple[dict, dict[str, list[float]]]:
    """Latent agreement, then timed runs of encode / analysis / synthesis, reference and ours."""
    with torch.no_grad():
        X = ref.wavelet_analysis(x, J=ref.J)
        agreement = latent_agreement(ref, ref.encoder(X), ours.encode(x), X)
        X_ours = ours.analysis(x)
        agreement["analysis_max_abs_difference"] = float((X_ours - X).abs().max())
    times = {
        "reference_encode": timed(lambda: R.reference_encode(ref, x), args),
        "encode": timed(lambda: ours.encode(x), args),
        "reference_analysis": timed(lambda: ref.wavelet_analysis(x, J=ref.J), args),
        "analysis": timed(lambda: ours.analysis(x), args),
        "reference_synthesis": timed(lambda: ref.wavelet_synthesis(X, J=ref.J), args),
        "synthesis": timed(lambda: ours.synthesis(X_ours), args),
    }
    return agreement, times


def bench_2d(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    config = dict(
        channels=3,
        J=args.J,
        Ne=None,
        Nd=768,
        latent_dim=args.latent_dim,
        latent_bits=8,
        lightweight_encode=True,
    )
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen) - 0.5
    ref = R.build_reference("2d", config, seed=args.seed)
    R.rescale_encoder(ref, x[: min(len(x), 8)])
    ours = R.to_ours(ref, config).to(device)
    ref, x = ref.to(device), x.to(device)

    agreement, times = _compare(ref, ours, x, args)

    images, pixels = args.batch, args.batch * args.size * args.size
    rates = {}
    for k, runs in times.items():
        t = statistics.median(runs)
        rates[k] = {"images_per_s": images / t, "mpixels_per_s": pixels / t / 1e6, "seconds": t, "runs": runs}
    return {"config": config, "input": list(x.shape), "agreement": agreement, "rates": rates}


def bench_1d(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    config = dict(
        channels=2,
        J=args.audio_J,
        Ne=None,
        Nd=2 * args.audio_latent_dim,
        latent_dim=args.audio_latent_dim,
        latent_bits=8,
        lightweight_encode=True,
        post_filter=False,
    )
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = 0.5 * (torch.rand(args.audio_batch, 2, args.audio_length, generator=gen) - 0.5)
    ref = R.build_reference("1d", config, seed=args.seed)
    R.rescale_encoder(ref, x[: min(len(x), 2)])
    ours = R.to_ours(ref, config).to(device)
    ref, x = ref.to(device), x.to(device)

    agreement, times = _compare(ref, ours, x, args)

    frames = args.audio_batch * args.audio_length  # per-channel samples (stereo frames)
    rates = {}
    for k, runs in times.items():
        t = statistics.median(runs)
        rates[k] = {"samples_per_s": frames / t, "realtime_factor": frames / AUDIO_RATE / t, "seconds": t}
        rates[k]["runs"] = runs
    return {"config": config, "input": list(x.shape), "agreement": agreement, "rates": rates}


def _agreement_line(a: dict) -> str:
    return (
        f"{a['mismatches']} of {a['latents']} latents differ ({a['mismatch_rate']:.2e}): "
        f"{a['boundary_mismatches']} at rounding ties, {a['other_mismatches']} elsewhere; "
        f"max |difference| {a['max_abs_difference']}; "
        f"WPT max |difference| {a['analysis_max_abs_difference']:.1e}"
    )


def table(results: dict, args: argparse.Namespace) -> str:
    rows = ["| benchmark | reference (walloc 1.2.1) | this library | speed-up |", "|---|---:|---:|---:|"]
    if "2d" in results:
        r = results["2d"]["rates"]
        what = f"RGB {args.size}x{args.size}, J={args.J}, batch {args.batch}"

        def img(k):
            return f"{r[k]['images_per_s']:,.0f} img/s ({r[k]['mpixels_per_s']:,.1f} MPixel/s)"

        for name, key in STAGES:
            speedup = r[key]["images_per_s"] / r["reference_" + key]["images_per_s"]
            rows.append(f"| 2-D {name}, {what} | {img('reference_' + key)} | {img(key)} | {speedup:.1f}x |")
    if "1d" in results:
        r = results["1d"]["rates"]
        what = f"stereo {args.audio_length} samples, J={args.audio_J}, batch {args.audio_batch}"

        def aud(k):
            rate, rtf = r[k]["samples_per_s"] / 1e6, r[k]["realtime_factor"]
            return f"{rate:,.1f} Msamples/s ({rtf:,.0f}x real time)"

        for name, key in STAGES:
            speedup = r[key]["samples_per_s"] / r["reference_" + key]["samples_per_s"]
            rows.append(f"| 1-D {name}, {what} | {aud('reference_' + key)} | {aud(key)} | {speedup:.1f}x |")
    return "\n".join(rows)


def environment(args: argparse.Namespace) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"torch": torch.__version__, "threads": args.threads, "device": args.device, "cpu": cpu}
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # pkg_resources deprecation in pytorch_wavelets
    warnings.filterwarnings("ignore", category=FutureWarning)  # weight_norm deprecation in diffusers
    env = environment(args)
    print(f"torch {env['torch']}, {env['threads']} threads, {env.get('gpu', env['cpu'])}", flush=True)
    results: dict = {"environment": env, "arguments": {k: str(v) for k, v in vars(args).items()}}
    if args.run_2d:
        results["2d"] = bench_2d(args)
        print("2-D latents:", _agreement_line(results["2d"]["agreement"]), flush=True)
    if args.run_1d:
        results["1d"] = bench_1d(args)
        print("1-D latents:", _agreement_line(results["1d"]["agreement"]), flush=True)
    results["table"] = table(results, args)
    print()
    print(results["table"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
