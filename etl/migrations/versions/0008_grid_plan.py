"""The grid planner: faces as building blocks, versions that assign faces to grids, drafts.

``plan_face``: a face of a township's planar arrangement (its township and police area by
code, the departmental source polygon holding it, households, population, incident workload,
area and perimeter in metres); rows are only added, so every version's faces stay.
``plan_face_edge``: the edges two faces share, in metres. ``plan_assignment`` and ``plan_grid``:
each version's grid for every face, and its grids' attributes. ``grid_version`` gains the version
a save was based on, the townships it changed (NULL: all) and when it was published.
``plan_draft``: a planner's unsaved work on one township.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"

SCHEMA = r"""
CREATE TABLE plan_face (
    id                bigserial PRIMARY KEY,
    township_code     text NOT NULL,
    police_area_code  text,
    source_id         integer,
    households        double precision NOT NULL DEFAULT 0,
    population        double precision NOT NULL DEFAULT 0,
    workload          double precision NOT NULL DEFAULT 0,
    area_m2           double precision NOT NULL,
    perimeter_m       double precision NOT NULL,
    geom              geometry(MULTIPOLYGON, 4326) NOT NULL
);
CREATE INDEX plan_face_geom_gist ON plan_face USING gist (geom);
CREATE INDEX plan_face_township ON plan_face (township_code);

CREATE TABLE plan_face_edge (
    a         bigint NOT NULL REFERENCES plan_face (id) ON DELETE CASCADE,
    b         bigint NOT NULL REFERENCES plan_face (id) ON DELETE CASCADE,
    length_m  double precision NOT NULL,
    PRIMARY KEY (a, b)
);

ALTER TABLE grid_version ADD COLUMN base_version integer;
ALTER TABLE grid_version ADD COLUMN townships text[];
ALTER TABLE grid_version ADD COLUMN published_at timestamptz;

CREATE TABLE plan_assignment (
    version    integer NOT NULL REFERENCES grid_version (version) ON DELETE CASCADE,
    face_id    bigint NOT NULL REFERENCES plan_face (id),
    grid_code  text,
    PRIMARY KEY (version, face_id)
);

CREATE TABLE plan_grid (
    version           integer NOT NULL REFERENCES grid_version (version) ON DELETE CASCADE,
    code              text NOT NULL,
    name              text,
    township_code     text NOT NULL,
    police_area_code  text,
    workers           integer NOT NULL DEFAULT 0 CHECK (workers >= 0),
    locked            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (version, code)
);

CREATE TABLE plan_draft (
    account_id     integer NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    township_code  text NOT NULL,
    base_version   integer NOT NULL,
    state          jsonb NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, township_code)
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS plan_draft, plan_grid, plan_assignment, plan_face_edge, plan_face")
    for column in ("published_at", "townships", "base_version"):
        op.execute(f"ALTER TABLE grid_version DROP COLUMN IF EXISTS {column}")
