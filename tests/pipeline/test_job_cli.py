"""jobs/encode_imagenet.py --help: it runs from a bare checkout and documents every flag (fast, no Ray)."""

from __future__ import annotations

import re
import subprocess
import sys

from e2e_helpers import JOB, REPO

FLAGS = {
    # flag -> text its help must show (choices, or a word of its meaning)
    "--input": "input",
    "--source": "image-folder",
    "--output": "output",
    "--format": "{webdataset,zarr}",
    "--latent-format": "zstd",
    "--shard-size": "shard",
    "--mode": "{overwrite,resume,append}",
    "--limit": "first N",
    "--codec": "codec",
    "--batch-size": "codec call",
    "--address": "Ray",
    "--workers": "actors",
    "--num-gpus-per-worker": "GPU",
    "--sample-timeout": "seconds",
    "--no-progress": "progress",
    "--size": "side",
    "--crop": "{center,none}",
}


def _entries(text: str) -> dict[str, str]:
    """argparse's option entries after 'options:': first flag -> its whole entry on one line."""
    entries: dict[str, str] = {}
    current = None
    for line in text.split("\noptions:\n", 1)[1].splitlines():
        start = re.match(r"^  (--?[a-z][\w-]*)", line)
        if start:
            current = start.group(1)
            entries[current] = line.strip()
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None  # a blank line or a group title
    return entries


def test_help_mentions_every_flag():
    proc = subprocess.run(
        [sys.executable, str(JOB), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: encode_imagenet.py")
    entries = _entries(proc.stdout)
    for flag, words in FLAGS.items():
        assert flag in entries, f"{flag} is not documented"
        assert words in entries[flag], entries[flag]
    for entry in entries.values():  # every option explains itself (more than flag + metavar)
        assert len(entry.split()) >= 4, entry
