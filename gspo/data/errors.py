"""Errors raised while loading and preparing prompt data."""

from __future__ import annotations

from gspo.errors import InputError


class DataError(InputError):
    """A data file or row is unusable; the message names the file (and line/row)."""
