"""Defence-line analysis tables and the fused-position view.

``line_crossing``: every point where a road crosses defence line 2 or 3, with
the checkpoint of that line matched to it (if any within reach) and whether it
is staffed. ``leak_route``: road paths from the border to the interior core
that pass no staffed checkpoint of a line. ``position_fused``: positions with
the police area and the four command units derived from their grid.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"

SCHEMA = r"""
CREATE TABLE line_crossing (
    id            serial PRIMARY KEY,
    line_no       smallint NOT NULL CHECK (line_no BETWEEN 1 AND 3),
    road_id       integer NOT NULL REFERENCES road (id) ON DELETE CASCADE,
    checkpoint_id integer REFERENCES checkpoint (id) ON DELETE SET NULL,
    staffed       boolean NOT NULL,
    geom          geometry(Point, 4326) NOT NULL
);
CREATE INDEX line_crossing_geom_gist ON line_crossing USING gist (geom);

CREATE TABLE leak_route (
    id       serial PRIMARY KEY,
    line_no  smallint NOT NULL CHECK (line_no BETWEEN 1 AND 3),
    length_m double precision NOT NULL CHECK (length_m >= 0),
    geom     geometry(MultiLineString, 4326) NOT NULL
);
CREATE INDEX leak_route_geom_gist ON leak_route USING gist (geom);

CREATE VIEW position_fused AS
SELECT p.unit_id, p.ts, p.geom, p.speed, p.heading, p.accuracy, p.source, p.h3,
       p.grid_id, p.zone_id, z.kind AS zone_kind, p.segment_id, p.border_m,
       g.police_area_id, pa.station_id,
       g.township_id, township.parent_id AS county_id, county.parent_id AS prefecture_id
FROM position p
LEFT JOIN grid g ON g.id = p.grid_id
LEFT JOIN police_area pa ON pa.id = g.police_area_id
LEFT JOIN command_unit township ON township.id = g.township_id
LEFT JOIN command_unit county ON county.id = township.parent_id
LEFT JOIN zone z ON z.id = p.zone_id;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS position_fused")
    op.execute("DROP TABLE IF EXISTS leak_route, line_crossing CASCADE")
