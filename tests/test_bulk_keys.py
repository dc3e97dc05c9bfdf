"""A bulk insert with a table's keys and indexes built after it (etl._copy.keys_built_after)."""
from __future__ import annotations

import psycopg
import pytest

from gridwatch.etl._copy import keys_built_after
from gridwatch.etl.database import pg_transaction

_TABLES = """
CREATE TEMP TABLE bk_parent (id int PRIMARY KEY);
CREATE TEMP TABLE bk_child (
    parent_id int NOT NULL REFERENCES bk_parent (id) ON DELETE CASCADE,
    code text UNIQUE, value float8 CHECK (value > 0), PRIMARY KEY (parent_id, value));
CREATE INDEX bk_child_value ON bk_child (value DESC);
INSERT INTO bk_parent SELECT generate_series(1, 100);
"""
_KEYS = "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'bk_child'::regclass"
_INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'bk_child'"


def _shape(conn: psycopg.Connection) -> tuple[set, set]:
    return set(conn.execute(_KEYS).fetchall()), set(conn.execute(_INDEXES).fetchall())


def test_keys_and_indexes_come_back_as_they_were(engine):
    with pg_transaction(engine) as conn:
        conn.execute(_TABLES)
        before = _shape(conn)
        with keys_built_after(conn, "bk_child"):
            keys, indexes = _shape(conn)
            assert {name for name, _ in keys} == {"bk_child_value_check"} and not indexes  # checks stay
            conn.execute("INSERT INTO bk_child SELECT g, 'c' || g, g FROM generate_series(1, 100) g")
        assert _shape(conn) == before
        assert len(before[0]) == 4 and len(before[1]) == 3  # primary, unique, foreign, check; 3 indexes
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO bk_child VALUES (101, 'x', 1)")


def test_a_row_breaking_a_key_fails_the_rebuild(engine):
    with pg_transaction(engine) as conn:
        conn.execute(_TABLES)
        with pytest.raises(psycopg.errors.ForeignKeyViolation), keys_built_after(conn, "bk_child"):
            conn.execute("INSERT INTO bk_child VALUES (1, 'a', 1), (999, 'b', 2)")
    with pg_transaction(engine) as conn:
        conn.execute(_TABLES)
        with pytest.raises(psycopg.errors.UniqueViolation), keys_built_after(conn, "bk_child"):
            conn.execute("INSERT INTO bk_child VALUES (1, 'a', 1), (2, 'a', 2)")
