"""Loading reference checkpoints safely, and the project's own format with its content hash."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.codec import (
    CheckpointError,
    UnsafeCheckpointError,
    from_reference,
    load,
    load_reference,
    save,
)


def _write_reference(tmp_path, vector, name="RGB_16x"):
    pth = tmp_path / f"{name}.pth"
    torch.save({"model_state_dict": vector["state_dict"]}, pth)
    (tmp_path / f"{name}.json").write_text(json.dumps(vector["config"]))
    return pth


def test_reference_pth_with_json_beside_loads_unchanged(tmp_path, vector):
    pth = _write_reference(tmp_path, vector)
    codec = load(pth)
    direct = from_reference(vector["config"], vector["state_dict"])
    assert torch.equal(codec.encode(vector["x"]), direct.encode(vector["x"]))


def test_reference_config_embedded_in_checkpoint(tmp_path, vector):
    pth = tmp_path / "embedded.pth"
    torch.save({"model_state_dict": vector["state_dict"], "config": vector["config"]}, pth)
    assert load_reference(pth).config.J == vector["config"]["J"]


class _Exploit:
    """Unpickling this runs os.system: the kind of payload a hostile checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_never_runs(tmp_path, vector):
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    torch.save({"model_state_dict": vector["state_dict"], "extra": _Exploit(marker)}, pth)
    (tmp_path / "evil.json").write_text(json.dumps(vector["config"]))
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle=True"):
        load(pth)
    assert not marker.exists()


def test_trusted_pickle_loads_when_asked(tmp_path, vector):
    from types import SimpleNamespace

    pth = tmp_path / "namespace.pth"
    torch.save({"model_state_dict": vector["state_dict"], "config": SimpleNamespace(**vector["config"])}, pth)
    with pytest.raises(UnsafeCheckpointError):
        load_reference(pth)
    codec = load_reference(pth, trust_pickle=True)
    assert codec.config.latent_dim == vector["config"]["latent_dim"]


def test_wrong_wavelet_filters_are_refused(vector):
    state_dict = dict(vector["state_dict"])
    key = next(k for k in state_dict if k.startswith("wt."))
    state_dict[key] = state_dict[key] * 2
    with pytest.raises(CheckpointError, match="not a bior4.4 filter"):
        from_reference(vector["config"], state_dict)


def test_state_dict_that_does_not_fit_the_config_is_refused(vector):
    config = dict(vector["config"], latent_dim=vector["config"]["latent_dim"] + 1)
    with pytest.raises((CheckpointError, RuntimeError)):
        from_reference(config, vector["state_dict"])


def test_missing_config_is_a_clear_error(tmp_path, vector):
    pth = tmp_path / "lonely.pth"
    torch.save({"model_state_dict": vector["state_dict"]}, pth)
    with pytest.raises(CheckpointError, match="lonely.json"):
        load(pth)


def test_project_format_round_trip_and_hash(tmp_path, vector):
    codec = from_reference(vector["config"], vector["state_dict"])
    json_path = save(codec, tmp_path / "mine", name="mine", metadata={"note": "test"})
    loaded = load(json_path)
    assert loaded.hash == codec.hash
    assert loaded.name == "mine" and loaded.metadata == {"note": "test"}
    assert torch.equal(loaded.encode(vector["x"]), codec.encode(vector["x"]))
    assert load(tmp_path / "mine").hash == codec.hash  # by stem too
    assert load(tmp_path / "mine.safetensors").hash == codec.hash


def test_hash_changes_with_any_weight(vector):
    a = from_reference(vector["config"], vector["state_dict"])
    b = from_reference(vector["config"], vector["state_dict"])
    assert a.hash == b.hash
    with torch.no_grad():
        w = next(b.parameters()).view(-1)
        w[0] = torch.nextafter(w[0], w[0] + 1)  # the smallest possible change
    assert a.hash != b.hash


def test_tampered_weights_are_detected(tmp_path, vector):
    codec = from_reference(vector["config"], vector["state_dict"])
    save(codec, tmp_path / "c")
    weights = load_file(str(tmp_path / "c.safetensors"))
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1
    save_file(weights, str(tmp_path / "c.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        load(tmp_path / "c.json")


def test_unknown_name_lists_what_exists(tmp_path):
    with pytest.raises(CheckpointError, match="not a bundled name"):
        load("no-such-codec")
