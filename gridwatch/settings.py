"""All settings of gridwatch, in one place, with typed and documented defaults.

Every field can be overridden by an environment variable named
``GRIDWATCH_<FIELD>`` (dicts as JSON), e.g. ``GRIDWATCH_DATABASE_URL`` or
``GRIDWATCH_COVERAGE_LIMIT_H='{"border_closed": 3}'``. The one setting read elsewhere is
``GRIDWATCH_CHROMIUM``, the browser of the tests and page benchmarks: :mod:`gridwatch.system`
reads it, as it runs before the Python packages are installed.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "ZONE_KINDS", "UNIT_KINDS", "UNIT_SPEED_KMH", "ROLES"]

ZONE_KINDS = ("border_closed", "port_control", "social_surface")
UNIT_KINDS = ("foot", "vehicle", "drone", "post", "checkpoint")
# Nearest units: walking on roads, on foot across country, a vehicle off the roads, a drone's cruise.
UNIT_SPEED_KMH = {"foot": 5.0, "foot_offroad": 3.0, "vehicle_offroad": 15.0, "drone": 60.0}
# Roles of accounts, each allowed what the one before it is, and more.
ROLES = ("viewer", "dispatcher", "planner", "admin")


class Settings(BaseSettings):
    """Settings read from ``GRIDWATCH_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="GRIDWATCH_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="An existing PostGIS server to use instead of the embedded one.",
    )
    home: Path = Field(
        default=Path(".gridwatch"),
        description="Where the embedded cluster, generated data and spools live.",
    )
    db_port: int | None = Field(
        default=None, description="Port of the embedded cluster; a free one when unset."
    )
    db_name: str = Field(default="gridwatch", description="Database name in the embedded cluster.")
    host: str = Field(default="127.0.0.1", description="Dashboard host.")
    port: int = Field(default=8050, description="Dashboard port.")
    timezone: str = Field(default="Asia/Shanghai", description="Site time zone for display.")
    coverage_limit_h: dict[str, float] = Field(
        default={"border_closed": 4.0, "port_control": 2.0, "social_surface": 24.0},
        description="Hours after which a place of each zone kind counts as uncovered.",
    )
    coverage_lookback_h: float = Field(
        default=48.0, ge=24,
        description="Hours of fixes coverage is derived from (at least the 24 h visit window and every zone's "
                    "limit): a place with no visit in this window reads \"no visit since\" its start.",
    )
    detection_radius_m: dict[str, float] = Field(
        default={"foot": 150.0, "vehicle": 300.0, "drone": 1000.0, "post": 500.0, "checkpoint": 200.0},
        description="How far a unit of each kind sees around its position.",
    )
    max_speed_kmh: dict[str, float] = Field(
        default={"foot": 15.0, "vehicle": 160.0, "drone": 150.0, "post": 15.0, "checkpoint": 15.0},
        description="Implied speeds above this between two fixes reject the later fix.",
    )
    unit_speed_kmh: dict[str, float] = Field(
        default=UNIT_SPEED_KMH,
        description="Nearest units: walking on roads (foot patrols, posts, checkpoint crews), on foot across "
                    "country, a vehicle off the roads (on roads it drives at the road class speeds), a drone "
                    "in a straight line.",
    )
    h3_resolution: int = Field(default=9, ge=0, le=15, description="H3 resolution of hex coverage.")
    border_segment_m: float = Field(default=1000.0, gt=0, description="Border segment length.")
    future_tolerance_s: float = Field(
        default=300.0, ge=0, description="Fixes later than now + this are rejected."
    )
    max_accuracy_m: float = Field(
        default=500.0, gt=0, description="Fixes with a worse accuracy are rejected."
    )
    ingest_max_age_s: float = Field(
        default=7 * 86400.0, gt=0, le=100 * 365 * 86400.0,
        description="Live fixes older than now - this are refused (a phone without a clock sends 1970 or year 1).",
    )
    ingest_max_connections: int = Field(
        default=1024, ge=1, description="Open connections the live ingest keeps, for HTTP and for CoT each."
    )
    ingest_max_connections_per_peer: int = Field(
        default=512, ge=1, description="Open connections one address may keep, for HTTP and for CoT each."
    )
    ingest_request_timeout_s: float = Field(
        default=10.0, gt=0,
        description="How long an HTTP client may take to send a request's head (from the connection's opening or "
                    "the request's first byte), and then its body; how long a CoT connection may take to "
                    "authenticate.",
    )
    ingest_keepalive_s: float = Field(
        default=60.0, gt=0, description="An HTTP connection idle this long after a response is closed."
    )
    ingest_cot_idle_s: float = Field(
        default=600.0, gt=0, description="An authenticated CoT connection silent this long is closed."
    )
    ingest_segment_bytes: int = Field(
        default=64 * 1024 * 1024, ge=64 * 1024, description="Size of a live-ingest spool segment file."
    )
    unit_silent_after_s: float = Field(
        default=600.0, gt=0, description="A unit with no fix for this long is silent."
    )
    data_stale_after_s: float = Field(
        default=900.0, gt=0, description="The dashboard warns when the newest fix is older."
    )
    feed_lag_s: float = Field(
        default=30.0, gt=0,
        description="The wall warns when live fixes wait this long unstored, or the ingest service is silent as long.",
    )
    live_refresh_s: float = Field(
        default=5.0, ge=0.05, description="How often the wall and dispatch pages redraw the live units."
    )
    alert_refresh_s: float = Field(default=10.0, ge=0.05, description="How often the dispatch page checks alerts.")
    shift_hours: float = Field(
        default=12.0, gt=0, description="A shift's length: the window of an evidence export or shift report by default."
    )
    refresh_s: float = Field(
        default=30.0, ge=0.05, description="How often the pages refresh KPIs, gap lists and live vector layers."
    )
    last_known_mb: float = Field(
        default=128.0, gt=0,
        description="How much of the last picture (tiles, units, figures) the dashboard keeps to show "
                    "while the database is away.",
    )
    tile_cache_mb: float = Field(
        default=64.0, gt=0,
        description="How many vector tiles the dashboard keeps made, each until the data under it changes.",
    )
    sliver_area_m2: float = Field(
        default=2000.0, ge=0, description="Fused-grid pieces below this area are absorbed."
    )
    fusion_processes: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1,
        description="Processes fusing grids side by side, a county each (1: all in the command's own).",
    )
    plan_balance_tolerance: float = Field(
        default=0.25, gt=0, lt=1,
        description="Grid planner: households, population and workload of a grid may differ this much "
                    "(a fraction) from its township's mean per grid.",
    )
    plan_workers_per_10k: float = Field(
        default=18.0, ge=0, description="Grid planner: the least grid workers per 10,000 residents of a grid."
    )
    plan_min_compactness: float = Field(
        default=0.2, ge=0, le=1, description="Grid planner: the least Polsby-Popper compactness of a grid."
    )
    plan_sliver_width_m: float = Field(
        default=5.0, ge=0, description="Grid planner: a grid thinner than this on average is a sliver."
    )
    plan_proposal_s: float = Field(
        default=15.0, gt=0, description="Grid planner: the longest a rebalancing proposal may search."
    )
    plan_workload_days: int = Field(
        default=90, gt=0, description="Grid planner: a face's workload is its incidents over this many days."
    )
    basemap_tiles_url: str | None = Field(
        default=None,
        description="An on-site XYZ raster tile URL template ({z}/{x}/{y}) drawn under the map layers.",
    )
    secret_key: str | None = Field(
        default=None,
        description="The key that signs session cookies; when unset, one is made in <home>/secret_key (mode 600).",
    )
    session_idle_s: float = Field(
        default=1800.0, gt=0, description="A signed-in person with no request for this long is signed out."
    )
    session_max_s: float = Field(
        default=12 * 3600.0, gt=0, description="A person is signed out this long after signing in (a shift)."
    )
    login_failures: str = Field(
        default="10 per 15 minutes",
        description="Wrong passwords allowed per account and per address before further tries wait (429).",
    )
    grid_priority: list[str] = Field(
        default=[], description="Departments in order of authority for grid fusion."
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (with its chain) of HTTPS for the dashboard and the ingest HTTP port; "
                    "``--tls-cert`` overrides it.",
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key of ``tls_cert``: a file of mode 600; ``--tls-key`` overrides it."
    )
    tls_server_names: list[str] = Field(
        default=[],
        description="Names and addresses TAK clients reach the ingest service by, for its CoT-over-TLS certificate "
                    "(besides localhost, this machine's host name and the address it listens on).",
    )
    device_cert_days: int = Field(
        default=365, ge=1, le=3650, description="How long a device certificate (gridwatch devices cert) is valid."
    )

    @field_validator("coverage_limit_h")
    @classmethod
    def _known_zone_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(ZONE_KINDS)
        if unknown:
            raise ValueError(f"zone kinds {sorted(unknown)} are not in {list(ZONE_KINDS)}")
        return {**{"border_closed": 4.0, "port_control": 2.0, "social_surface": 24.0}, **value}

    @model_validator(mode="after")
    def _lookback_covers_the_limits(self) -> Settings:
        longest = max(self.coverage_limit_h.values())
        if self.coverage_lookback_h < longest:
            raise ValueError(f"coverage_lookback_h was {self.coverage_lookback_h} but must be at least the longest "
                             f"coverage limit, {longest} h")
        return self

    @field_validator("unit_speed_kmh")
    @classmethod
    def _all_unit_speeds(cls, value: dict[str, float]) -> dict[str, float]:
        speeds = {**UNIT_SPEED_KMH, **value}
        wrong = sorted(set(speeds) - set(UNIT_SPEED_KMH))
        if wrong:
            raise ValueError(f"unit speeds {wrong} are not in {list(UNIT_SPEED_KMH)}")
        if min(speeds.values()) <= 0:
            raise ValueError(f"unit speeds must be above 0 km/h, got {speeds}")
        return speeds

    @property
    def home_dir(self) -> Path:
        """The home folder as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def pki_dir(self) -> Path:
        """The installation's own certificate authority and the ingest service's certificate."""
        return self.home_dir / "pki"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
