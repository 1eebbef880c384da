"""Bundled codecs, addressed by name, and `load` that accepts a name or any checkpoint path."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError, load_project, load_reference
from .model import WaLLoC

BUNDLED_DIR = Path(__file__).parent / "bundled"  # <name>.json + <name>.safetensors


def available() -> list[str]:
    """Names of the codecs shipped with the package."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))


def load(name_or_path: str | Path, *, trust_pickle: bool = False) -> WaLLoC:
    """A bundled codec by name, a codec in the project's format, or a reference .pth (+ .json)."""
    key = str(name_or_path)
    if (BUNDLED_DIR / f"{key}.json").exists():
        return load_project(BUNDLED_DIR / key)
    path = Path(name_or_path)
    if path.suffix == ".pth" or path.suffix == ".pt":
        return load_reference(path, trust_pickle=trust_pickle)
    if path.suffix in (".json", ".safetensors") or Path(str(path) + ".json").exists():
        return load_project(path)
    raise CheckpointError(
        f"no codec {key!r}: not a bundled name ({', '.join(available()) or 'none bundled'}), "
        "not a .pth reference checkpoint, and no <path>.json/.safetensors pair"
    )
