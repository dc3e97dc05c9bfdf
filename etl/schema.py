"""The schema, declared once: SQLAlchemy tables with GeoAlchemy2 geometry columns.

Every geometry column has a type and SRID 4326, and a GiST index of its own
name. The Alembic migrations (``migrations/versions``) build exactly these
tables; a test compares the migrated database with :data:`metadata` (Alembic's
autogenerate comparison) and fails on any difference. ``position`` is
partitioned by day (``ensure_position_partitions`` makes the partitions), and
the view ``position_fused`` adds each fix's police area and command units.
"""
from __future__ import annotations

import re

from geoalchemy2 import Geometry, alembic_helpers
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB, REAL

from gridwatch.settings import ROLES, ZONE_KINDS

__all__ = ["metadata", "include_object", "POSITION_PARTITION"] + [
    "command_unit", "police_area", "grid_source", "grid", "grid_lineage", "grid_version", "plan_face", "plan_face_edge",
    "plan_assignment", "plan_grid", "plan_draft", "audit_log", "account", "kiosk", "zone",
    "defence_line", "checkpoint", "border_segment", "road", "river", "settlement", "port", "sensor", "unit",
    "position", "unit_latest", "incident", "grid_coverage", "segment_coverage", "hex_coverage", "quarantine",
    "loaded_file", "etl_run", "line_crossing", "leak_route", "device", "ingest_offset", "ingest_status", "alert",
    "table_change", "coverage_clock", "coverage_pending",
]

metadata = MetaData()
# The name of one day's partition of ``position``: position_YYYYMMDD.
POSITION_PARTITION = r"^position_\d{8}$"



def include_object(obj: object, name: str | None, kind: str, reflected: bool, compare_to: object) -> bool:
    """Whether a database object belongs to the declared schema, for Alembic's comparison: not
    PostGIS's own tables, Alembic's version table or the day partitions of ``position``."""
    if kind == "table" and reflected and name and (re.match(POSITION_PARTITION, name) or name == "alembic_version"):
        return False
    return alembic_helpers.include_object(obj, name, kind, reflected, compare_to)


def _geom(kind: str, *, nullable: bool = False, name: str = "geom", computed: str | None = None) -> Column:
    """A geometry column of ``kind`` in EPSG:4326 (its GiST index is declared with the table);
    ``computed``: the expression of a stored generated column."""
    extra = (Computed(computed, persisted=True),) if computed else ()
    return Column(name, Geometry(kind, srid=4326, spatial_index=False), *extra, nullable=nullable)


def _gist(table: str, column: str = "geom", name: str | None = None) -> Index:
    return Index(name or f"{table}_{column}_gist", column, postgresql_using="gist")


def _now() -> text:
    return text("now()")


def _coverage_columns() -> list[Column]:
    """Last visit, visit counts and dwell over the 1 h / 4 h / 24 h windows, and the place's limit."""
    counts = [Column(f"visits_{w}", Integer, nullable=False, server_default=text("0")) for w in ("1h", "4h", "24h")]
    dwell = [Column(f"dwell_s_{w}", DOUBLE_PRECISION, nullable=False, server_default=text("0"))
             for w in ("1h", "4h", "24h")]
    return [Column("last_visit", DateTime(timezone=True)), *counts, *dwell]


def _fused_columns() -> list[Column]:
    """Where a point lies: H3 cell, grid, zone, nearest border segment and its distance."""
    return [Column("h3", BigInteger), Column("grid_id", Integer), Column("zone_id", Integer),
            Column("segment_id", Integer), Column("border_m", REAL)]


command_unit = Table(
    "command_unit", metadata,
    Column("id", Integer, primary_key=True),
    Column("level", Text, nullable=False),
    Column("parent_id", Integer, ForeignKey("command_unit.id", ondelete="CASCADE")),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("name_en", Text),
    _geom("MULTIPOLYGON"),
    _geom("POINT", nullable=True, name="label_point", computed="ST_PointOnSurface(geom)"),
    CheckConstraint("level IN ('prefecture', 'county', 'township', 'station')"),
    CheckConstraint("(level = 'prefecture') = (parent_id IS NULL)"),
    _gist("command_unit"),
    _gist("command_unit", "label_point"),
    Index("command_unit_parent", "parent_id"),
)

police_area = Table(
    "police_area", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("name_en", Text),
    Column("station_id", Integer, ForeignKey("command_unit.id", ondelete="CASCADE"), nullable=False),
    _geom("MULTIPOLYGON"),
    _gist("police_area"),
)

grid_source = Table(
    "grid_source", metadata,
    Column("id", Integer, primary_key=True),
    Column("department", Text, nullable=False),
    Column("source_code", Text, nullable=False),
    Column("name", Text),
    Column("township_code", Text),
    Column("households", Integer, CheckConstraint("households >= 0")),
    Column("population", Integer, CheckConstraint("population >= 0")),
    Column("attrs", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _geom("MULTIPOLYGON"),
    UniqueConstraint("department", "source_code"),
    _gist("grid_source"),
)

grid = Table(
    "grid", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("township_id", Integer, ForeignKey("command_unit.id"), nullable=False),
    Column("police_area_id", Integer, ForeignKey("police_area.id")),
    Column("households", Integer, CheckConstraint("households >= 0")),
    Column("population", Integer, CheckConstraint("population >= 0")),
    Column("workers", Integer, CheckConstraint("workers >= 0")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _geom("MULTIPOLYGON"),
    _geom("POINT", nullable=True, name="label_point", computed="ST_PointOnSurface(geom)"),
    _gist("grid"),
    _gist("grid", "label_point"),
    Index("grid_township", "township_id"),
    Index("grid_police_area", "police_area_id"),
)

grid_lineage = Table(
    "grid_lineage", metadata,
    Column("grid_id", Integer, ForeignKey("grid.id", ondelete="CASCADE"), nullable=False),
    Column("source_id", Integer, ForeignKey("grid_source.id", ondelete="CASCADE"), nullable=False),
    Column("share", DOUBLE_PRECISION, CheckConstraint("share > 0 AND share <= 1.000001"), nullable=False),
    PrimaryKeyConstraint("grid_id", "source_id"),
    Index("grid_lineage_source", "source_id"),
)

grid_version = Table(
    "grid_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("author", Text, nullable=False),
    Column("note", Text),
    Column("source_digest", Text),
    Column("base_version", Integer),
    Column("townships", ARRAY(Text)),
    Column("published_at", DateTime(timezone=True)),
)

# The planner's building blocks (see migration 0008): faces, their shared edges, each version's
# assignment of faces to grids and its grids' attributes, and unsaved drafts.
plan_face = Table(
    "plan_face", metadata,
    Column("id", BigInteger, primary_key=True),
    Column("township_code", Text, nullable=False),
    Column("police_area_code", Text),
    Column("source_id", Integer),
    *(Column(name, DOUBLE_PRECISION, nullable=False, server_default=text("0"))
      for name in ("households", "population", "workload")),
    Column("area_m2", DOUBLE_PRECISION, nullable=False),
    Column("perimeter_m", DOUBLE_PRECISION, nullable=False),
    _geom("MULTIPOLYGON"),
    _gist("plan_face"),
    Index("plan_face_township", "township_code"),
)

plan_face_edge = Table(
    "plan_face_edge", metadata,
    Column("a", BigInteger, ForeignKey("plan_face.id", ondelete="CASCADE"), nullable=False),
    Column("b", BigInteger, ForeignKey("plan_face.id", ondelete="CASCADE"), nullable=False),
    Column("length_m", DOUBLE_PRECISION, nullable=False),
    PrimaryKeyConstraint("a", "b"),
)

plan_assignment = Table(
    "plan_assignment", metadata,
    Column("version", Integer, ForeignKey("grid_version.version", ondelete="CASCADE"), nullable=False),
    Column("face_id", BigInteger, ForeignKey("plan_face.id"), nullable=False),
    Column("grid_code", Text),
    PrimaryKeyConstraint("version", "face_id"),
)

plan_grid = Table(
    "plan_grid", metadata,
    Column("version", Integer, ForeignKey("grid_version.version", ondelete="CASCADE"), nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text),
    Column("township_code", Text, nullable=False),
    Column("police_area_code", Text),
    Column("workers", Integer, CheckConstraint("workers >= 0"), nullable=False, server_default=text("0")),
    Column("locked", Boolean, nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("version", "code"),
)

plan_draft = Table(
    "plan_draft", metadata,
    Column("account_id", Integer, ForeignKey("account.id", ondelete="CASCADE"), nullable=False),
    Column("township_code", Text, nullable=False),
    Column("base_version", Integer, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    PrimaryKeyConstraint("account_id", "township_code"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("address", Text),
    Index("audit_log_at", "at"),
)

_NAME = "name ~ '^[A-Za-z0-9._@-]{1,64}$'"

account = Table(
    "account", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, CheckConstraint(_NAME), nullable=False, unique=True),
    Column("role", Text, CheckConstraint(f"role IN {ROLES}"), nullable=False),
    Column("command_unit_code", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("password_changed_at", DateTime(timezone=True), nullable=False, server_default=_now()),
)

kiosk = Table(
    "kiosk", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, CheckConstraint(_NAME), nullable=False),
    Column("command_unit_code", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("revoked_at", DateTime(timezone=True)),
    Index("kiosk_name_in_use", "name", unique=True, postgresql_where=text("revoked_at IS NULL")),
)

zone = Table(
    "zone", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, CheckConstraint(f"kind IN {tuple(ZONE_KINDS)}"), nullable=False),
    Column("name", Text),
    _geom("MULTIPOLYGON"),
    _gist("zone"),
)

defence_line = Table(
    "defence_line", metadata,
    Column("id", Integer, primary_key=True),
    Column("line_no", SmallInteger, CheckConstraint("line_no BETWEEN 1 AND 3"), nullable=False),
    Column("name", Text),
    _geom("MULTILINESTRING"),
    _gist("defence_line"),
)

checkpoint = Table(
    "checkpoint", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("line_no", SmallInteger, CheckConstraint("line_no BETWEEN 1 AND 3"), nullable=False),
    Column("name", Text),
    Column("kind", Text, CheckConstraint("kind IN ('road_checkpoint', 'port', 'post')"), nullable=False,
           server_default=text("'road_checkpoint'::text")),
    Column("staffed", Boolean, nullable=False),
    _geom("POINT"),
    _gist("checkpoint"),
)

border_segment = Table(
    "border_segment", metadata,
    Column("id", Integer, primary_key=True),
    Column("km_from", DOUBLE_PRECISION, CheckConstraint("km_from >= 0"), nullable=False),
    Column("km_to", DOUBLE_PRECISION, nullable=False),
    _geom("LINESTRING"),
    CheckConstraint("km_to > km_from"),
    _gist("border_segment"),
)

road = Table(
    "road", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text),
    Column("class", Text, CheckConstraint("class IN ('trunk', 'secondary', 'track', 'patrol')"), nullable=False),
    Column("name", Text),
    _geom("MULTILINESTRING"),
    _gist("road"),
)

river = Table(
    "river", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text),
    _geom("MULTILINESTRING"),
    _gist("river"),
)

settlement = Table(
    "settlement", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("name_en", Text),
    Column("kind", Text, CheckConstraint("kind IN ('seat', 'town', 'village')"), nullable=False),
    Column("households", Integer, CheckConstraint("households >= 0")),
    Column("population", Integer, CheckConstraint("population >= 0")),
    _geom("POINT"),
    _gist("settlement"),
)

port = Table(
    "port", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text),
    _geom("POINT"),
)

sensor = Table(
    "sensor", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("kind", Text, CheckConstraint("kind IN ('camera', 'radar')"), nullable=False),
    Column("range_m", DOUBLE_PRECISION, CheckConstraint("range_m > 0"), nullable=False),
    Column("fov_deg", DOUBLE_PRECISION, CheckConstraint("fov_deg > 0 AND fov_deg <= 360")),
    Column("azimuth_deg", DOUBLE_PRECISION, CheckConstraint("azimuth_deg >= 0 AND azimuth_deg < 360")),
    Column("up", Boolean, nullable=False, server_default=text("true")),
    _geom("POINT"),
    # its ground coverage: a disc of its range, or a camera's sector (function of migration 0009)
    _geom("POLYGON", nullable=True, name="coverage",
          computed="sensor_coverage(geom, kind, range_m, fov_deg, azimuth_deg)"),
    _gist("sensor"),
    _gist("sensor", "coverage"),
)

unit = Table(
    "unit", metadata,
    Column("id", Integer, primary_key=True),
    Column("callsign", Text, nullable=False, unique=True),
    Column("kind", Text, CheckConstraint("kind IN ('foot', 'vehicle', 'drone', 'post', 'checkpoint')"), nullable=False),
    Column("command_unit_id", Integer, ForeignKey("command_unit.id")),
    Column("status", Text, CheckConstraint("status IN ('on_duty', 'responding', 'off_duty')"), nullable=False,
           server_default=text("'on_duty'::text")),
    Column("area_code", Text),
    Column("shift_start", Time),
    Column("shift_end", Time),
    _geom("MULTIPOLYGON", nullable=True, name="area_geom"),
    _gist("unit", "area_geom", name="unit_area_gist"),
    Index("unit_command_unit", "command_unit_id"),
)

# unit_id has no foreign key: every loader resolves callsigns to units and quarantines unknown
# ones, and a per-row RI trigger would cost a third of the load rate on the hottest table. No GiST
# on geom: every fix carries its fused grid, zone, segment and H3 cell, which the read paths use.
position = Table(
    "position", metadata,
    Column("unit_id", Integer, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    _geom("POINT"),
    Column("speed", REAL, CheckConstraint("speed >= 0")),
    Column("heading", REAL, CheckConstraint("heading >= 0 AND heading <= 360")),
    Column("accuracy", REAL, CheckConstraint("accuracy >= 0")),
    Column("source", Text, nullable=False),
    *_fused_columns(),
    PrimaryKeyConstraint("unit_id", "ts"),
    Index("position_ts_brin", "ts", postgresql_using="brin"),
    postgresql_partition_by="RANGE (ts)",
)

unit_latest = Table(
    "unit_latest", metadata,
    Column("unit_id", Integer, ForeignKey("unit.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    _geom("POINT"),
    Column("speed", REAL),
    Column("heading", REAL),
    Column("accuracy", REAL),
    Column("source", Text, nullable=False),
    *_fused_columns(),
    _gist("unit_latest"),
)

incident = Table(
    "incident", metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("severity", SmallInteger, CheckConstraint("severity BETWEEN 1 AND 4"), nullable=False),
    Column("status", Text, CheckConstraint("status IN ('reported', 'dispatched', 'on_scene', 'closed')"),
           nullable=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
    Column("dispatched_at", DateTime(timezone=True)),
    Column("on_scene_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("note", Text),
    _geom("POINT"),
    *_fused_columns(),
    CheckConstraint("closed_at IS NULL OR closed_at >= reported_at"),
    _gist("incident"),
    Index("incident_open", "severity", "reported_at", postgresql_where=text("status <> 'closed'")),
    Index("incident_closed_at", "closed_at", postgresql_where=text("closed_at IS NOT NULL")),
)

grid_coverage = Table(
    "grid_coverage", metadata,
    Column("grid_id", Integer, ForeignKey("grid.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    *_coverage_columns(),
    Column("limit_h", DOUBLE_PRECISION, nullable=False),
    Column("status", Text, CheckConstraint("status IN ('fresh', 'due', 'overdue')"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now()),
)

segment_coverage = Table(
    "segment_coverage", metadata,
    Column("segment_id", Integer, ForeignKey("border_segment.id", ondelete="CASCADE"), primary_key=True,
           autoincrement=False),
    *_coverage_columns(),
    Column("watched", Boolean, nullable=False, server_default=text("false")),
    Column("limit_h", DOUBLE_PRECISION, nullable=False),
    Column("status", Text, CheckConstraint("status IN ('patrolled', 'watched', 'overdue')"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now()),
)

hex_coverage = Table(
    "hex_coverage", metadata,
    Column("h3", BigInteger, primary_key=True, autoincrement=False),
    *_coverage_columns(),
    Column("limit_h", DOUBLE_PRECISION, nullable=False),
    Column("status", Text, CheckConstraint("status IN ('fresh', 'due', 'overdue')"), nullable=False),
    _geom("POLYGON"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    _gist("hex_coverage"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", BigInteger, primary_key=True),
    Column("run_id", Integer),
    Column("source", Text, nullable=False),
    Column("record", JSONB, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=_now()),
    # the CSV line (1 = the header) or the vector feature number (1 = the first) of a file's record
    Column("line", BigInteger, CheckConstraint("line >= 1")),
    Index("quarantine_source", "source"),
)

# Files already loaded into a target, by content: loading the same file again changes nothing.
loaded_file = Table(
    "loaded_file", metadata,
    Column("sha256", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("run_id", Integer),
    Column("rows_in", BigInteger, nullable=False),
    Column("rows_loaded", BigInteger, nullable=False),
    Column("rows_rejected", BigInteger, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    PrimaryKeyConstraint("sha256", "target"),
)

etl_run = Table(
    "etl_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("job", Text, nullable=False),
    Column("source", Text),
    Column("started", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("finished", DateTime(timezone=True)),
    Column("rows_in", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_loaded", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("status", Text, CheckConstraint("status IN ('running', 'ok', 'failed')"), nullable=False,
           server_default=text("'running'::text")),
    Column("message", Text),
)

line_crossing = Table(
    "line_crossing", metadata,
    Column("id", Integer, primary_key=True),
    Column("line_no", SmallInteger, CheckConstraint("line_no BETWEEN 1 AND 3"), nullable=False),
    Column("road_id", Integer, ForeignKey("road.id", ondelete="CASCADE"), nullable=False),
    Column("checkpoint_id", Integer, ForeignKey("checkpoint.id", ondelete="SET NULL")),
    Column("staffed", Boolean, nullable=False),
    _geom("POINT"),
    _gist("line_crossing"),
)

leak_route = Table(
    "leak_route", metadata,
    Column("id", Integer, primary_key=True),
    Column("line_no", SmallInteger, CheckConstraint("line_no BETWEEN 1 AND 3"), nullable=False),
    Column("length_m", DOUBLE_PRECISION, CheckConstraint("length_m >= 0"), nullable=False),
    _geom("MULTILINESTRING"),
    _gist("leak_route"),
)

# A device's credentials: a token (hashed) and/or a certificate (its SHA-256 fingerprint); revoking
# withdraws both, and a new one of either clears ``revoked_at``.
device = Table(
    "device", metadata,
    Column("callsign", Text, ForeignKey("unit.callsign", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
    Column("token_hash", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("cert_fingerprint", Text),
    Column("cert_expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint("(cert_fingerprint IS NULL) = (cert_expires_at IS NULL)", name="device_cert_expiry"),
    CheckConstraint("revoked_at IS NULL OR (token_hash IS NULL AND cert_fingerprint IS NULL)",
                    name="device_revoked_has_no_credentials"),
)

# How far each spool is in ``position``, moved in the transaction that writes the rows.
ingest_offset = Table(
    "ingest_offset", metadata,
    Column("spool_id", Text, primary_key=True),
    Column("segment", BigInteger, nullable=False),
    Column("pos", BigInteger, CheckConstraint("pos >= 0"), nullable=False),
    Column("fixes", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now()),
)

# How the live ingest's writer is doing, one row per spool, written every few seconds.
ingest_status = Table(
    "ingest_status", metadata,
    Column("spool_id", Text, primary_key=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now()),
    Column("state", Text, CheckConstraint("state IN ('storing', 'retrying', 'stopped')"), nullable=False),
    Column("backlog", BigInteger, CheckConstraint("backlog >= 0"), nullable=False, server_default=text("0")),
    Column("oldest_unstored_at", DateTime(timezone=True)),
    Column("last_stored_at", DateTime(timezone=True)),
    Column("last_error", Text),
)

alert = Table(
    "alert", metadata,
    Column("id", BigInteger, primary_key=True),
    Column("kind", Text, CheckConstraint(
        "kind IN ('segment_overdue', 'unit_silent', 'unit_out_of_area', 'incident_in_gap', "
        "'checkpoint_unstaffed', 'leak_route')"), nullable=False),
    Column("subject", Text, nullable=False),
    Column("severity", SmallInteger, CheckConstraint("severity BETWEEN 1 AND 4"), nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("cleared_at", DateTime(timezone=True)),
    Column("acknowledged_by", Text),
    Column("acknowledged_at", DateTime(timezone=True)),
    CheckConstraint("cleared_at IS NULL OR cleared_at >= raised_at"),
    CheckConstraint("(acknowledged_by IS NULL) = (acknowledged_at IS NULL)"),
    Index("alert_open_key", "kind", "subject", unique=True, postgresql_where=text("cleared_at IS NULL")),
    Index("alert_raised", "raised_at"),
    Index("alert_open", text("severity DESC"), text("raised_at DESC"), text("id DESC"),
          postgresql_where=text("cleared_at IS NULL")),
)

# How often each table a map layer or the road graph reads has changed (statement-level triggers
# of migration 0009 count every write): the tile cache and the road graph are keyed by it.
table_change = Table(
    "table_change", metadata,
    Column("name", Text, primary_key=True),
    Column("generation", BigInteger, nullable=False, server_default=text("0")),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=_now()),
)

# The time the coverage windows were last moved to (no row: coverage never derived).
coverage_clock = Table(
    "coverage_clock", metadata,
    Column("id", SmallInteger, CheckConstraint("id = 1"), primary_key=True, autoincrement=False,
           server_default=text("1")),
    Column("windows_at", DateTime(timezone=True), nullable=False),
)

# The fixes stored but not yet counted by coverage (their position keys): the ingest writer adds
# them in the batch's transaction, the live step or the full rebuild that counts them deletes them.
coverage_pending = Table(
    "coverage_pending", metadata,
    Column("unit_id", Integer, primary_key=True, autoincrement=False),
    Column("ts", DateTime(timezone=True), primary_key=True),
)
