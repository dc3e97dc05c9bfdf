"""The data model of DESIGN.md: command units, grids, zones, defence lines,
units, positions (partitioned by day), incidents, derived coverage, run log.

Revision ID: 0001
Revises:
"""
from alembic import op

revision = "0001"
down_revision = None

SCHEMA = r"""
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE command_unit (
    id        serial PRIMARY KEY,
    level     text NOT NULL CHECK (level IN ('prefecture', 'county', 'township', 'station')),
    parent_id integer REFERENCES command_unit (id) ON DELETE CASCADE,
    code      text NOT NULL UNIQUE,
    name      text NOT NULL,
    name_en   text,
    geom      geometry(MultiPolygon, 4326) NOT NULL,
    CHECK ((level = 'prefecture') = (parent_id IS NULL))
);
CREATE INDEX command_unit_geom_gist ON command_unit USING gist (geom);
CREATE INDEX command_unit_parent ON command_unit (parent_id);

CREATE TABLE police_area (
    id         serial PRIMARY KEY,
    code       text NOT NULL UNIQUE,
    name       text,
    name_en    text,
    station_id integer NOT NULL REFERENCES command_unit (id) ON DELETE CASCADE,
    geom       geometry(MultiPolygon, 4326) NOT NULL
);
CREATE INDEX police_area_geom_gist ON police_area USING gist (geom);

CREATE TABLE grid_source (
    id            serial PRIMARY KEY,
    department    text NOT NULL,
    source_code   text NOT NULL,
    name          text,
    township_code text,
    households    integer CHECK (households >= 0),
    population    integer CHECK (population >= 0),
    attrs         jsonb NOT NULL DEFAULT '{}',
    geom          geometry(MultiPolygon, 4326) NOT NULL,
    UNIQUE (department, source_code)
);
CREATE INDEX grid_source_geom_gist ON grid_source USING gist (geom);

CREATE TABLE grid (
    id             serial PRIMARY KEY,
    code           text NOT NULL UNIQUE,
    name           text,
    township_id    integer NOT NULL REFERENCES command_unit (id),
    police_area_id integer REFERENCES police_area (id),
    households     integer CHECK (households >= 0),
    population     integer CHECK (population >= 0),
    workers        integer CHECK (workers >= 0),
    version        integer NOT NULL DEFAULT 1,
    geom           geometry(MultiPolygon, 4326) NOT NULL
);
CREATE INDEX grid_geom_gist ON grid USING gist (geom);

CREATE TABLE grid_lineage (
    grid_id   integer NOT NULL REFERENCES grid (id) ON DELETE CASCADE,
    source_id integer NOT NULL REFERENCES grid_source (id) ON DELETE CASCADE,
    share     double precision NOT NULL CHECK (share > 0 AND share <= 1.000001),
    PRIMARY KEY (grid_id, source_id)
);

CREATE TABLE grid_version (
    version    integer PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    author     text NOT NULL,
    note       text,
    source_digest text
);

CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE zone (
    id   serial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('border_closed', 'port_control', 'social_surface')),
    name text,
    geom geometry(MultiPolygon, 4326) NOT NULL
);
CREATE INDEX zone_geom_gist ON zone USING gist (geom);

CREATE TABLE defence_line (
    id      serial PRIMARY KEY,
    line_no smallint NOT NULL CHECK (line_no BETWEEN 1 AND 3),
    name    text,
    geom    geometry(MultiLineString, 4326) NOT NULL
);
CREATE INDEX defence_line_geom_gist ON defence_line USING gist (geom);

CREATE TABLE checkpoint (
    id      serial PRIMARY KEY,
    code    text NOT NULL UNIQUE,
    line_no smallint NOT NULL CHECK (line_no BETWEEN 1 AND 3),
    name    text,
    kind    text NOT NULL DEFAULT 'road_checkpoint' CHECK (kind IN ('road_checkpoint', 'port', 'post')),
    staffed boolean NOT NULL,
    geom    geometry(Point, 4326) NOT NULL
);
CREATE INDEX checkpoint_geom_gist ON checkpoint USING gist (geom);

CREATE TABLE border_segment (
    id      serial PRIMARY KEY,
    km_from double precision NOT NULL CHECK (km_from >= 0),
    km_to   double precision NOT NULL,
    geom    geometry(LineString, 4326) NOT NULL,
    CHECK (km_to > km_from)
);
CREATE INDEX border_segment_geom_gist ON border_segment USING gist (geom);

CREATE TABLE road (
    id    serial PRIMARY KEY,
    code  text,
    class text NOT NULL CHECK (class IN ('trunk', 'secondary', 'track', 'patrol')),
    name  text,
    geom  geometry(MultiLineString, 4326) NOT NULL
);
CREATE INDEX road_geom_gist ON road USING gist (geom);

CREATE TABLE river (
    id   serial PRIMARY KEY,
    name text,
    geom geometry(MultiLineString, 4326) NOT NULL
);
CREATE INDEX river_geom_gist ON river USING gist (geom);

CREATE TABLE settlement (
    id         serial PRIMARY KEY,
    code       text NOT NULL UNIQUE,
    name       text NOT NULL,
    name_en    text,
    kind       text NOT NULL CHECK (kind IN ('seat', 'town', 'village')),
    households integer CHECK (households >= 0),
    population integer CHECK (population >= 0),
    geom       geometry(Point, 4326) NOT NULL
);
CREATE INDEX settlement_geom_gist ON settlement USING gist (geom);

CREATE TABLE port (
    id   serial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text,
    geom geometry(Point, 4326) NOT NULL
);

CREATE TABLE sensor (
    id          serial PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('camera', 'radar')),
    range_m     double precision NOT NULL CHECK (range_m > 0),
    fov_deg     double precision CHECK (fov_deg > 0 AND fov_deg <= 360),
    azimuth_deg double precision CHECK (azimuth_deg >= 0 AND azimuth_deg < 360),
    up          boolean NOT NULL DEFAULT true,
    geom        geometry(Point, 4326) NOT NULL
);
CREATE INDEX sensor_geom_gist ON sensor USING gist (geom);

CREATE TABLE unit (
    id              serial PRIMARY KEY,
    callsign        text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('foot', 'vehicle', 'drone', 'post', 'checkpoint')),
    command_unit_id integer REFERENCES command_unit (id),
    status          text NOT NULL DEFAULT 'on_duty' CHECK (status IN ('on_duty', 'responding', 'off_duty')),
    area_code       text,
    shift_start     time,
    shift_end       time,
    area_geom       geometry(MultiPolygon, 4326)
);
CREATE INDEX unit_area_gist ON unit USING gist (area_geom);

-- unit_id has no foreign key: every loader resolves callsigns to units and
-- quarantines unknown ones, and a per-row RI trigger would cost a third of the
-- load rate on the hottest table. unit_latest keeps its foreign key.
CREATE TABLE position (
    unit_id   integer NOT NULL,
    ts        timestamptz NOT NULL,
    geom      geometry(Point, 4326) NOT NULL,
    speed     real CHECK (speed >= 0),
    heading   real CHECK (heading >= 0 AND heading <= 360),
    accuracy  real CHECK (accuracy >= 0),
    source    text NOT NULL,
    h3        bigint,
    grid_id   integer,
    zone_id   integer,
    segment_id integer,
    border_m  real,
    PRIMARY KEY (unit_id, ts)
) PARTITION BY RANGE (ts);
-- No GiST on geom: every fix carries its fused grid, zone, segment and H3 cell,
-- which the read paths use; a GiST would halve the load rate for no reader.
CREATE INDEX position_ts_brin ON position USING brin (ts);

-- One partition per UTC day, created on demand before a load.
CREATE FUNCTION ensure_position_partitions(t_from timestamptz, t_to timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date := (t_from AT TIME ZONE 'UTC')::date;
    created integer := 0;
    part text;
BEGIN
    WHILE day <= (t_to AT TIME ZONE 'UTC')::date LOOP
        part := 'position_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF position FOR VALUES FROM (%L) TO (%L)',
                part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;

CREATE TABLE unit_latest (
    unit_id    integer PRIMARY KEY REFERENCES unit (id) ON DELETE CASCADE,
    ts         timestamptz NOT NULL,
    geom       geometry(Point, 4326) NOT NULL,
    speed      real,
    heading    real,
    accuracy   real,
    source     text NOT NULL,
    h3         bigint,
    grid_id    integer,
    zone_id    integer,
    segment_id integer,
    border_m   real
);
CREATE INDEX unit_latest_geom_gist ON unit_latest USING gist (geom);

CREATE TABLE incident (
    id           serial PRIMARY KEY,
    source_id    text NOT NULL UNIQUE,
    kind         text NOT NULL,
    severity     smallint NOT NULL CHECK (severity BETWEEN 1 AND 4),
    status       text NOT NULL CHECK (status IN ('reported', 'dispatched', 'on_scene', 'closed')),
    reported_at  timestamptz NOT NULL,
    dispatched_at timestamptz,
    on_scene_at  timestamptz,
    closed_at    timestamptz,
    note         text,
    geom         geometry(Point, 4326) NOT NULL,
    h3           bigint,
    grid_id      integer,
    zone_id      integer,
    segment_id   integer,
    border_m     real,
    CHECK (closed_at IS NULL OR closed_at >= reported_at)
);
CREATE INDEX incident_geom_gist ON incident USING gist (geom);

CREATE TABLE grid_coverage (
    grid_id     integer PRIMARY KEY REFERENCES grid (id) ON DELETE CASCADE,
    last_visit  timestamptz,
    visits_1h   integer NOT NULL DEFAULT 0,
    visits_4h   integer NOT NULL DEFAULT 0,
    visits_24h  integer NOT NULL DEFAULT 0,
    dwell_s_1h  double precision NOT NULL DEFAULT 0,
    dwell_s_4h  double precision NOT NULL DEFAULT 0,
    dwell_s_24h double precision NOT NULL DEFAULT 0,
    limit_h     double precision NOT NULL,
    status      text NOT NULL CHECK (status IN ('fresh', 'due', 'overdue')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE segment_coverage (
    segment_id  integer PRIMARY KEY REFERENCES border_segment (id) ON DELETE CASCADE,
    last_visit  timestamptz,
    visits_1h   integer NOT NULL DEFAULT 0,
    visits_4h   integer NOT NULL DEFAULT 0,
    visits_24h  integer NOT NULL DEFAULT 0,
    dwell_s_1h  double precision NOT NULL DEFAULT 0,
    dwell_s_4h  double precision NOT NULL DEFAULT 0,
    dwell_s_24h double precision NOT NULL DEFAULT 0,
    watched     boolean NOT NULL DEFAULT false,
    limit_h     double precision NOT NULL,
    status      text NOT NULL CHECK (status IN ('patrolled', 'watched', 'overdue')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hex_coverage (
    h3          bigint PRIMARY KEY,
    last_visit  timestamptz,
    visits_1h   integer NOT NULL DEFAULT 0,
    visits_4h   integer NOT NULL DEFAULT 0,
    visits_24h  integer NOT NULL DEFAULT 0,
    dwell_s_1h  double precision NOT NULL DEFAULT 0,
    dwell_s_4h  double precision NOT NULL DEFAULT 0,
    dwell_s_24h double precision NOT NULL DEFAULT 0,
    limit_h     double precision NOT NULL,
    status      text NOT NULL CHECK (status IN ('fresh', 'due', 'overdue')),
    geom        geometry(Polygon, 4326) NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hex_coverage_geom_gist ON hex_coverage USING gist (geom);

CREATE TABLE quarantine (
    id     bigserial PRIMARY KEY,
    run_id integer,
    source text NOT NULL,
    record jsonb NOT NULL,
    reason text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_source ON quarantine (source);

-- Files already loaded into a target, by content: loading the same file again changes nothing.
CREATE TABLE loaded_file (
    sha256        text NOT NULL,
    path          text NOT NULL,
    target        text NOT NULL,
    run_id        integer,
    rows_in       bigint NOT NULL,
    rows_loaded   bigint NOT NULL,
    rows_rejected bigint NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, target)
);

CREATE TABLE etl_run (
    id            serial PRIMARY KEY,
    job           text NOT NULL,
    source        text,
    started       timestamptz NOT NULL DEFAULT now(),
    finished      timestamptz,
    rows_in       bigint NOT NULL DEFAULT 0,
    rows_loaded   bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    message       text
);
"""

TABLES = (
    "etl_run", "loaded_file", "quarantine", "hex_coverage", "segment_coverage", "grid_coverage", "incident",
    "unit_latest", "position", "unit", "sensor", "port", "settlement", "river", "road",
    "border_segment", "checkpoint", "defence_line", "zone", "audit_log", "grid_version",
    "grid_lineage", "grid", "grid_source", "police_area", "command_unit",
)


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS ensure_position_partitions(timestamptz, timestamptz)")
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
