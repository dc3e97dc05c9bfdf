"""Folders that another user can use: the server user (postgres, when the tests run as root) or nobody."""
from __future__ import annotations

from pathlib import Path

__all__ = ["open_to_all"]


def open_to_all(path: Path, mode: int = 0o755) -> Path:
    """Give ``path`` ``mode`` and let everyone walk down to it (x on every parent)."""
    path.chmod(mode)
    for parent in path.parents:
        if parent != Path("/") and parent.stat().st_mode & 0o001 == 0:
            parent.chmod(parent.stat().st_mode | 0o001)
    return path
