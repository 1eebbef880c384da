"""--source-option KEY=VALUE reaches the source's constructor (e.g. an HF split, MUSDB stems)."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import add_common_flags, config_from_args, parse_source_option


def test_parse_source_option():
    assert parse_source_option("split=validation") == ("split", "validation")
    assert parse_source_option('stems=["mixture","vocals"]') == ("stems", ["mixture", "vocals"])
    assert parse_source_option("label_column=") == ("label_column", "")
    assert parse_source_option("window=1024") == ("window", 1024)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_source_option("no-equals")


def test_options_reach_the_config():
    parser = argparse.ArgumentParser()
    add_common_flags(parser, default_input="in", default_output="out", default_codec="c")
    args = parser.parse_args(["--source-option", "split=test", "--source-option", "image_column=img"])
    assert config_from_args(args).source_options == {"split": "test", "image_column": "img"}
    assert config_from_args(parser.parse_args([])).source_options == {}
