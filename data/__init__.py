"""Sample data for gridwatch: the fictional border prefecture generator."""

from .sample import SCALES, generate_sample

__all__ = ["SCALES", "generate_sample"]
