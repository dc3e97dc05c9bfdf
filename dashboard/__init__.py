"""The web dashboard: the Dash app, its pages and the map endpoints."""
from gridwatch.dashboard.app import create_app, run

__all__ = ["create_app", "run"]
