"""Whole columns read from a query in one round (etl._pgbinary.read_columns)."""
from __future__ import annotations

import numpy as np
import pytest

from gridwatch.etl import _pgbinary as pgb
from gridwatch.etl.database import pg_transaction

COLUMNS = (("i", "int4"), ("big", "int8"), ("x", "float8"), ("t", "timestamptz"), ("b", "bool"))


def test_each_type_comes_as_numpy_in_row_order(engine):
    query = """SELECT g, g::int8 * 10000000000, g / 4.0, timestamptz '1970-01-01 00:00:01+00' + g * interval '1 us',
                      g %% 2 = 0 FROM generate_series(-2, 3) g WHERE g > %(low)s"""
    with pg_transaction(engine) as conn:
        got = pgb.read_columns(conn, query, {"low": -2}, COLUMNS)
    assert got["i"].tolist() == [-1, 0, 1, 2, 3] and got["i"].dtype == np.int32
    assert got["big"].tolist() == [-10_000_000_000, 0, 10_000_000_000, 20_000_000_000, 30_000_000_000]
    assert got["x"].tolist() == [-0.25, 0.0, 0.25, 0.5, 0.75]
    assert got["t"].tolist() == [999_999, 1_000_000, 1_000_001, 1_000_002, 1_000_003]  # Unix microseconds
    assert got["b"].tolist() == [False, True, False, True, False] and got["b"].dtype == bool


def test_no_rows_give_empty_columns(engine):
    with pg_transaction(engine) as conn:
        got = pgb.read_columns(conn, "SELECT 1, 2::int8, 0.5::float8, now(), true WHERE false", {}, COLUMNS)
    assert all(len(column) == 0 for column in got.values())


def test_a_null_is_refused_not_shifted(engine):
    with pg_transaction(engine) as conn, pytest.raises(ValueError, match="NULL"):
        pgb.read_columns(conn, "SELECT g, CASE WHEN g = 2 THEN NULL ELSE g END FROM generate_series(1, 3) g",
                         {}, (("a", "int4"), ("b", "int4")))
