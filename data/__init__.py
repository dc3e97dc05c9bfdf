"""Sample data for gridwatch: the fictional border prefecture generator."""

from .sample import SCALES, fixed_end, generate_sample

__all__ = ["SCALES", "fixed_end", "generate_sample"]
