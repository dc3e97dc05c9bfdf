"""The declared schema (SQLAlchemy + GeoAlchemy2 tables) and the migrated database agree."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from geoalchemy2 import Geometry

from gridwatch.etl.schema import include_object, metadata


def test_migrations_build_exactly_the_declared_tables(engine: sa.Engine) -> None:
    """Alembic's autogenerate comparison: tables, columns, types (geometry kind and SRID),
    nullability, server defaults, keys and indexes."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "include_object": include_object, "compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, metadata) == []


def test_every_declared_check_constraint_is_in_the_database(engine: sa.Engine) -> None:
    """Alembic does not compare CHECK constraints; their number per table must match."""
    inspector = sa.inspect(engine)
    declared = {t.name: sum(isinstance(c, sa.CheckConstraint)
                            for c in [*t.constraints, *(k for column in t.columns for k in column.constraints)])
                for t in metadata.sorted_tables}
    migrated = {name: len(inspector.get_check_constraints(name)) for name in declared}
    assert migrated == declared


def test_every_geometry_column_has_a_type_an_srid_and_a_gist_index() -> None:
    for table in metadata.sorted_tables:
        indexed = {c.name for i in table.indexes if i.dialect_options["postgresql"]["using"] == "gist" for c in i.columns}
        for column in table.columns:
            if isinstance(column.type, Geometry):
                assert column.type.srid == 4326 and column.type.geometry_type != "GEOMETRY", column
                # position has none on purpose: the read paths use its fused ids (see the table's note)
                assert column.name in indexed or table.name in ("position", "port"), column
