"""The live ingest service: units report over OsmAnd (HTTP), Cursor-on-Target (TCP) and JSON batches.

Each protocol module (:mod:`gridwatch.etl.ingest.osmand`, :mod:`gridwatch.etl.ingest.cot`,
:mod:`gridwatch.etl.ingest.batch`) parses to one :class:`Fix`. A fix is acknowledged
only once it is in the durable spool (:mod:`gridwatch.etl.ingest.spool`); the writer
(:mod:`gridwatch.etl.ingest.writer`) drains the spool into ``position`` and
``unit_latest`` in order, exactly once, and catches up after the database was
down. Devices and their tokens and certificates are in :mod:`gridwatch.etl.ingest.devices`,
the installation's CA in :mod:`gridwatch.etl.ingest.pki`, what a TAK client imports (PKCS#12,
data package) in :mod:`gridwatch.etl.ingest.takpackage`;
connection caps and timeouts in :mod:`gridwatch.etl.ingest.limits`; keeping
tokens out of the log in :mod:`gridwatch.etl.ingest.redact`; the counters
kept across restarts in :mod:`gridwatch.etl.ingest.counters`.
``gridwatch ingest`` runs :mod:`gridwatch.etl.ingest.server`.
"""
from gridwatch.etl.ingest._fix import Fix, FixError, check_fix

__all__ = ["Fix", "FixError", "check_fix"]
