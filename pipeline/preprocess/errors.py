"""The one error a preprocessor raises for an input that cannot become a sample."""

from __future__ import annotations


class DecodeError(ValueError):
    """An input that cannot become a sample; the message is the error table's reason."""
