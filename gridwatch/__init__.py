"""gridwatch: grid-management and border-defence situational dashboard."""
from gridwatch.errors import DatabaseError, GridwatchError, InputError
from gridwatch.settings import Settings, get_settings

__all__ = ["DatabaseError", "GridwatchError", "InputError", "Settings", "get_settings"]
