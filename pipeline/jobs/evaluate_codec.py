"""Rate-distortion report: bundled (or given) codecs vs the KLT codec, JPEG, WebP and Vorbis.

    python jobs/evaluate_codec.py     # rgb-16x, rgb-16x-klt, stereo-44k, stereo-44k-klt -> docs/
    python jobs/evaluate_codec.py --image-codecs path/to/codec.json --audio-codecs --out /tmp/rd

Images: held-out photos of the first image codec's training split (centre crops up to 512 px);
audio: centre windows of its held-out music files. Writes OUT/rate_distortion.md, OUT/rd_curve.png,
OUT/rd_curve_audio.png, OUT/reconstructions.png and OUT/rate_distortion.json. Needs matplotlib
(the `train` extra). Installed (pip install walloc-pipeline[train]): `walloc-evaluate-codec`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import FlagError, JobArgumentParser, check_codec, check_output, codec_description, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-codecs", nargs="*", default=["rgb-16x", "rgb-16x-klt"], help="names or paths")
    p.add_argument(
        "--audio-codecs", nargs="*", default=["stereo-44k", "stereo-44k-klt"], help="names or paths"
    )
    p.add_argument("--audio-length", type=positive_int, default=1 << 19, help="samples per held-out clip")
    p.add_argument("--out", default="docs", help="output folder")
    p.add_argument("--missing-ok", action="store_true", help="evaluate the held-out files that are there")
    return p


def validate(a: argparse.Namespace) -> None:
    for name in a.image_codecs:
        check_codec("--image-codecs", name, "2d")
    for name in a.audio_codecs:
        check_codec("--audio-codecs", name, "1d")
    check_output("--out", a.out)
    # the first codec's held-out files are the test set: they must be on this machine
    for flag, names in (("--image-codecs", a.image_codecs), ("--audio-codecs", a.audio_codecs)):
        if names and not a.missing_ok:
            check_heldout(flag, names[0])


def check_heldout(flag: str, ref: str) -> None:
    from ..training.evaluate import heldout_files

    description = codec_description(ref)
    if description is None:
        return  # a reference .pth: its metadata is known once loaded
    try:
        heldout_files(description.get("metadata", {}), description.get("name"))
    except (FileNotFoundError, ValueError) as err:
        raise FlagError(
            flag,
            f"{ref}: {err}",
            "a first codec whose held-out files are here (python scripts/fetch_data.py fetches them)",
        ) from None


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_checked(argv, validate)
    from ..training.rd_report import write_report  # matplotlib and the measures: after the checks

    print(write_report(a.image_codecs, a.audio_codecs, a.audio_length, Path(a.out), a.missing_ok).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
