"""Metric functions of the learning jobs, on inputs whose answers are known by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.metrics import accuracy, char_accuracy, colourfulness, psnr, string_accuracy


def test_colourfulness_of_grey_images_is_zero():
    grey = torch.rand(3, 1, 16, 16).expand(3, 3, 16, 16)
    assert torch.allclose(colourfulness(grey), torch.zeros(3), atol=1e-4)


def test_colourfulness_of_a_flat_colour_is_the_mean_term():
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0  # rg = 255, yb = 127.5, no spread
    assert colourfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-5)


def test_colourfulness_grows_with_spread_and_rejects_non_rgb():
    a = torch.full((1, 3, 8, 8), 0.5)
    b = a.clone()
    b[:, 0, :4] = 0.9  # red half
    assert colourfulness(b).item() > colourfulness(a).item()
    with pytest.raises(ValueError):
        colourfulness(torch.zeros(1, 1, 8, 8))


def test_char_accuracy_counts_positions_and_length_errors():
    assert char_accuracy(["ABCD", "WXYZ"], ["ABCD", "WXYZ"]) == 1.0
    assert char_accuracy(["ABXD"], ["ABCD"]) == 0.75
    assert char_accuracy(["AB"], ["ABCD"]) == 0.5  # missing characters are wrong
    assert char_accuracy(["ABCDEF"], ["ABCD"]) == pytest.approx(4 / 6)  # extra ones too
    with pytest.raises(ValueError):
        char_accuracy(["A"], ["A", "B"])


def test_string_and_class_accuracy():
    assert string_accuracy(["AB", "CD", "EF"], ["AB", "CX", "EF"]) == pytest.approx(2 / 3)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    grid = torch.zeros(1, 3, 2, 2)
    grid[0, 2] = 1.0  # class 2 everywhere
    assert accuracy(grid, torch.tensor([[[2, 2], [2, 0]]])) == 0.75


def test_psnr_of_a_known_error():
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-6)  # mse 0.01 on range 1
