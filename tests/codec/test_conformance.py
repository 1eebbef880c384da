"""Every reference conformance vector: transform, latents, decoder and reconstruction."""

from __future__ import annotations

import torch

from pipeline.codec import from_reference

BOUNDARY = 1e-3  # the reference's companded value this close to k+0.5 may round either way


def _codec(v):
    return from_reference(v["config"], v["state_dict"])


def test_level1_wpt(vector):
    codec = _codec(vector)
    assert (codec.analysis_one_level(vector["x"]) - vector["wpt_level1"]).abs().max() < 1e-5


def test_full_wpt_and_inverse(vector):
    codec = _codec(vector)
    assert (codec.analysis(vector["x"]) - vector["wpt"]).abs().max() < 1e-5
    assert (codec.synthesis(vector["wpt"]) - vector["wpt_inverse"]).abs().max() < 1e-5


def test_latents_equal_reference_except_on_rounding_boundaries(vector):
    codec = _codec(vector)
    z = codec.encode(vector["x"])
    assert z.dtype == torch.int8
    assert z.shape == vector["latent"].shape
    companded = vector["latent_companded"]
    on_boundary = ((companded - companded.floor()) - 0.5).abs() < BOUNDARY
    mismatch = z.float() != vector["latent"]
    assert not (mismatch & ~on_boundary).any()
    assert mismatch.float().mean() < 1e-3


def test_continuous_latent_close_to_reference(vector):
    codec = _codec(vector)
    with torch.no_grad():
        linear = codec.encode_continuous(vector["x"])
        companded = codec.compander.to_uniform(linear)
    scale = vector["latent_linear"].abs().max()
    assert ((linear - vector["latent_linear"]).abs().max() / scale) < 1e-5
    assert (companded - vector["latent_companded"]).abs().max() < 1e-3


def test_decoder_output_matches_reference(vector):
    codec = _codec(vector)
    with torch.no_grad():
        wpt_hat = codec.decode_bands(vector["latent"])
    rel = (wpt_hat - vector["wpt_hat"]).abs().max() / vector["wpt_hat"].abs().max()
    assert rel < 1e-4


def test_reconstruction_matches_reference(vector):
    codec = _codec(vector)
    x_hat = codec.decode(vector["latent"])
    assert x_hat.shape == vector["x"].shape
    assert x_hat.min() >= -0.5 and x_hat.max() <= 0.5
    # x_hat is a linear function (synthesis, post filter) of the decoder output, clamped: its error
    # is measured relative to the decoder output's scale, not to the clamped range
    assert (x_hat - vector["x_hat"]).abs().max() < 1e-4 * vector["wpt_hat"].abs().max()


def test_eval_forward_matches_reference_reconstruction(vector):
    codec = _codec(vector).eval()
    with torch.no_grad():
        out = codec(vector["x"])
    assert (out["latent"] == codec.encode(vector["x"]).float()).all()
    err = (out["x_hat"].clamp(-0.5, 0.5) - vector["x_hat"]).abs().max()
    assert err < 1e-4 * vector["wpt_hat"].abs().max()
