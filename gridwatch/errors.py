"""Exceptions a user can act on: the CLI prints their message as one line."""
from __future__ import annotations

__all__ = ["GridwatchError", "DatabaseError", "InputError"]


class GridwatchError(RuntimeError):
    """An expected failure with a message that says what to do."""


class DatabaseError(GridwatchError):
    """The database cannot be started, reached or used."""


class InputError(GridwatchError, ValueError):
    """An input file or argument is malformed."""
