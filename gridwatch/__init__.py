"""gridwatch: grid-management and border-defence situational dashboard.

Settings are in :mod:`gridwatch.settings`; this package imports only the exceptions, so that a
command such as ``gridwatch --help`` starts without loading pydantic.
"""
from gridwatch.errors import DatabaseError, GridwatchError, InputError

__all__ = ["DatabaseError", "GridwatchError", "InputError"]
