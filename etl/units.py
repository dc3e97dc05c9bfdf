"""Load the patrol-unit table from CSV: checked, then upserted by callsign.

The assigned area comes from ``area_code``, looked up first among police
areas, then among command units; the command unit from ``command_unit_code``.
A changed version of a file loaded before (or ``--force``) updates the units it
lists by callsign; units it no longer lists stay, as their fixes and devices
refer to them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from gridwatch.etl._copy import copy_rows, create_staging
from gridwatch.etl._feeds import FileLoad, Rejections, load_each_file, read_csv_text, require_fields
from gridwatch.etl.manifest import TARGETS, FileEntry
from gridwatch.etl.runlog import RunCounts
from gridwatch.settings import UNIT_KINDS, Settings

__all__ = ["load_units", "UNIT_STATUSES"]

REQUIRED, OPTIONAL = TARGETS["unit"]
UNIT_STATUSES = ("on_duty", "responding", "off_duty")
_CLOCK = r"^(?:(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?|24:00(?::00)?)$"


def load_units(
    engine: sa.Engine, entries: list[FileEntry], *, settings: Settings, counts: RunCounts, force: bool = False
) -> None:
    """Load unit CSV files, each in one transaction; rows with a bad value go to the quarantine, a
    file that cannot be read is refused and the others are loaded."""
    load_each_file(engine, entries, target="unit", counts=counts, load=_load_file, force=force)


def _codes(conn: psycopg.Connection, table: str) -> pd.Index:
    return pd.Index([r[0] for r in conn.execute(f"SELECT code FROM {table}")])


def _load_file(conn: psycopg.Connection, file: FileLoad) -> None:
    raw = read_csv_text(file.entry)
    fields = require_fields(file.entry, raw.frame, REQUIRED, OPTIONAL)
    file.outcome.rows_in += raw.count
    rej = Rejections(len(fields))
    rej.reject(fields["callsign"] == "", "missing callsign")
    rej.reject(~fields["kind"].isin(UNIT_KINDS), f"kind is not one of {list(UNIT_KINDS)}")
    rej.reject(~fields["status"].isin(UNIT_STATUSES), f"status is not one of {list(UNIT_STATUSES)}")
    rej.reject(~fields["command_unit_code"].isin(_codes(conn, "command_unit")), "unknown command_unit_code")
    areas = _codes(conn, "police_area").union(_codes(conn, "command_unit"))
    rej.reject((fields["area_code"] != "") & ~fields["area_code"].isin(areas), "unknown area_code")
    for name in ("shift_start", "shift_end"):
        rej.reject((fields[name] != "") & ~fields[name].str.match(_CLOCK), f"{name} is not a time of day (HH:MM)")
    rej.reject(rej.ok & fields["callsign"].where(rej.ok, None).duplicated(keep="last").to_numpy(), "duplicate")
    rej.quarantine(conn, file, raw)

    good = fields.loc[rej.ok].replace("", np.nan)
    create_staging(
        conn, "unit_stage",
        columns="callsign text, kind text, command_unit_code text, status text, area_code text, "
                "shift_start time, shift_end time",
    )
    copy_rows(conn, "unit_stage", good, columns=list(REQUIRED + OPTIONAL))
    file.outcome.rows_loaded += conn.execute(
        """
        INSERT INTO unit (callsign, kind, command_unit_id, status, area_code, shift_start, shift_end, area_geom)
        SELECT s.callsign, s.kind, cu.id, s.status, s.area_code, s.shift_start, s.shift_end,
               coalesce((SELECT geom FROM police_area WHERE code = s.area_code),
                        (SELECT geom FROM command_unit WHERE code = s.area_code))
        FROM unit_stage s JOIN command_unit cu ON cu.code = s.command_unit_code
        ON CONFLICT (callsign) DO UPDATE SET
            kind = EXCLUDED.kind, command_unit_id = EXCLUDED.command_unit_id, status = EXCLUDED.status,
            area_code = EXCLUDED.area_code, shift_start = EXCLUDED.shift_start, shift_end = EXCLUDED.shift_end,
            area_geom = EXCLUDED.area_geom
        """
    ).rowcount
