"""Errors raised while loading and preparing prompt data."""

from __future__ import annotations


class DataError(ValueError):
    """A data file or row is unusable; the message names the file (and line/row)."""
