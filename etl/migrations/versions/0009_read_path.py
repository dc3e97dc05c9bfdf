"""The read path: stored tile geometry, a change count per map table, and the missing indexes.

``table_change``: one row per table a map layer or the road graph reads (made by its first
write), its ``generation`` counted up and ``changed_at`` set by a statement-level trigger on
every insert, update, delete or truncate. The row is written inside the writing transaction, so
a reader never sees a count newer than the rows it sees; the tile cache and the road graph key
their contents by it.

Stored geometry (generated columns, so they follow every write): each command unit's and grid's
point on surface (labels, gap targets) and each sensor's ground coverage (a disc of its range,
or a camera's sector), each with a GiST index, so ``geom && envelope`` and point-in-polygon
tests use an index instead of computing the geometry per request.

Indexes: unit(command_unit_id), grid(township_id), grid(police_area_id), grid_lineage(source_id),
open incidents, open alerts in the order the dispatcher reads them, and closed incidents by
their closing time (the incident layer's 24-hour window).

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"

# Every table a catalogued map layer reads (gridwatch.layers.catalog), and road for the road graph.
TRACKED = ("zone", "grid", "grid_coverage", "hex_coverage", "sensor", "river", "road", "command_unit",
           "defence_line", "border_segment", "segment_coverage", "leak_route", "settlement", "checkpoint",
           "incident")

SCHEMA = r"""
CREATE TABLE table_change (
    name        text PRIMARY KEY,
    generation  bigint NOT NULL DEFAULT 0,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION note_table_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO table_change AS c (name, generation) VALUES (TG_TABLE_NAME, 1)
    ON CONFLICT (name) DO UPDATE SET generation = c.generation + 1, changed_at = now();
    RETURN NULL;
END
$$;

CREATE FUNCTION sensor_coverage(at geometry, kind text, range_m double precision, fov_deg double precision,
                                azimuth_deg double precision) RETURNS geometry
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN kind = 'camera' AND fov_deg < 360 AND azimuth_deg IS NOT NULL THEN (
                    SELECT ST_MakePolygon(ST_MakeLine(
                        ARRAY[at] || array_agg(ST_Project(at::geography, range_m,
                            radians(azimuth_deg - fov_deg / 2 + fov_deg * i / 16))::geometry ORDER BY i)
                        || ARRAY[at]))
                    FROM generate_series(0, 16) AS i)
                ELSE ST_Buffer(at::geography, range_m, 'quad_segs=16')::geometry
           END
$$;

ALTER TABLE command_unit ADD COLUMN label_point geometry(POINT, 4326)
    GENERATED ALWAYS AS (ST_PointOnSurface(geom)) STORED;
CREATE INDEX command_unit_label_point_gist ON command_unit USING gist (label_point);
ALTER TABLE grid ADD COLUMN label_point geometry(POINT, 4326)
    GENERATED ALWAYS AS (ST_PointOnSurface(geom)) STORED;
CREATE INDEX grid_label_point_gist ON grid USING gist (label_point);
ALTER TABLE sensor ADD COLUMN coverage geometry(POLYGON, 4326)
    GENERATED ALWAYS AS (sensor_coverage(geom, kind, range_m, fov_deg, azimuth_deg)) STORED;
CREATE INDEX sensor_coverage_gist ON sensor USING gist (coverage);

CREATE INDEX unit_command_unit ON unit (command_unit_id);
CREATE INDEX grid_township ON grid (township_id);
CREATE INDEX grid_police_area ON grid (police_area_id);
CREATE INDEX grid_lineage_source ON grid_lineage (source_id);
CREATE INDEX incident_open ON incident (severity, reported_at) WHERE status <> 'closed';
CREATE INDEX incident_closed_at ON incident (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX alert_open ON alert (severity DESC, raised_at DESC, id DESC) WHERE cleared_at IS NULL;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in TRACKED:
        op.execute(f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION note_table_change()")


def downgrade() -> None:
    for table in TRACKED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_changed ON {table}")
    op.execute("""
        DROP INDEX IF EXISTS alert_open, incident_closed_at, incident_open, grid_lineage_source, grid_police_area,
            grid_township, unit_command_unit;
        ALTER TABLE sensor DROP COLUMN IF EXISTS coverage;
        ALTER TABLE grid DROP COLUMN IF EXISTS label_point;
        ALTER TABLE command_unit DROP COLUMN IF EXISTS label_point;
        DROP FUNCTION IF EXISTS sensor_coverage(geometry, text, double precision, double precision, double precision);
        DROP FUNCTION IF EXISTS note_table_change();
        DROP TABLE IF EXISTS table_change;
    """)
