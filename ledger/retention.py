"""Retention: delete only what is past the retention period AND acknowledged by the centre.

The centre acknowledges sealed batches (`acknowledge(ledger, seal_id)`, called by the sync
agent once the centre has stored everything up to that seal). `prune` then deletes, per
table, the longest id prefix whose rows are all (a) covered by an acknowledged seal and
(b) ended before now - retention_days. Deletion goes through the one sanctioned path: a
row in `retention_guard` set inside the same transaction (the delete triggers allow ids up
to it) and removed before commit; each deletion is recorded in `retention_runs`, which
`verify` reads so pruned rows are not reported as tampering.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ledger.db import Ledger, LedgerError
from ledger.records import log_event
from ledger.seal import sealed_tables

LEGAL_FLOOR_DAYS = 90
DAY_MS = 86_400_000


def acknowledge(ledger: Ledger, seal_id: int, receipt: str = "") -> int:
    """Record that the centre has stored every row up to and including seal `seal_id`.

    For the sync agent. Acknowledgements only move forward; an unknown seal is an error.
    """
    conn = ledger.db.conn
    if conn.execute("SELECT 1 FROM seals WHERE id = ?", [seal_id]).fetchone() is None:
        raise LedgerError(f"seal {seal_id} does not exist; the centre cannot have acknowledged it")
    current = acknowledged_seal(ledger)
    if seal_id < current:
        raise LedgerError(f"seal {seal_id} is older than the acknowledged seal {current}; acks only move forward")
    return ledger.db["centre_acks"].insert({"at_ms": ledger.now_ms(), "seal_id": seal_id, "receipt": receipt}).last_pk


def acknowledged_seal(ledger: Ledger) -> int:
    """The newest seal the centre has acknowledged (0: none)."""
    return ledger.db.conn.execute("SELECT COALESCE(MAX(seal_id), 0) FROM centre_acks").fetchone()[0]


def acked_through(conn: sqlite3.Connection, seal_id: int) -> dict[str, int]:
    """Per table, the highest row id covered by seals up to seal_id."""
    through: dict[str, int] = {}
    for (ranges,) in conn.execute("SELECT ranges FROM seals WHERE id <= ?", [seal_id]):
        for table, r in json.loads(ranges).items():
            through[table] = max(through.get(table, 0), r["to"])
    return through


@dataclass
class PruneReport:
    """What prune deleted and what it could not."""

    cutoff_ms: int
    deleted: dict[str, int] = field(default_factory=dict)
    kept_unacked: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _end_expr(conn: sqlite3.Connection, table: str) -> tuple[str | None, int]:
    row = conn.execute("SELECT end_expr, prune_order FROM ledger_retention WHERE tbl = ?", [table]).fetchone()
    if row is not None:
        return row[0], row[1]
    cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    return ("at_ms" if "at_ms" in cols else None), 100


def prune(ledger: Ledger, retention_days: int) -> PruneReport:
    """Delete rows past retention that the centre has acknowledged; never anything else."""
    if retention_days < LEGAL_FLOOR_DAYS:
        raise LedgerError(f"retention_days={retention_days} is below the legal floor of {LEGAL_FLOOR_DAYS} days")
    conn = ledger.db.conn
    now = ledger.now_ms()
    rep = PruneReport(cutoff_ms=now - retention_days * DAY_MS)
    acked = acked_through(conn, acknowledged_seal(ledger))
    plan = []
    for table in sealed_tables(conn):
        expr, order = _end_expr(conn, table)
        if expr is not None:
            plan.append((order, table, expr))
    for _, table, expr in sorted(plan):
        limit = acked.get(table, 0)
        floor = conn.execute("SELECT COALESCE(MAX(through_id), 0) FROM retention_runs WHERE tbl = ?", [table]).fetchone()[0]
        first_young = conn.execute(
            f'SELECT MIN(id) FROM "{table}" WHERE id > ? AND NOT ({expr} < ?)', [floor, rep.cutoff_ms]).fetchone()[0]
        through = limit if first_young is None else min(limit, first_young - 1)
        # Never delete a table's newest row: these are rowid tables without AUTOINCREMENT, so an
        # emptied table would hand out id 1 again, and ids below the seal and sync high-water
        # marks would be taken for already sealed and already sent (found by the sync tests).
        newest = conn.execute(f'SELECT MAX(id) FROM "{table}"').fetchone()[0] or 0
        through = min(through, newest - 1)
        old_unacked = conn.execute(
            f'SELECT COUNT(*) FROM "{table}" WHERE id > ? AND {expr} < ?', [max(limit, floor), rep.cutoff_ms]).fetchone()[0]
        if old_unacked:
            rep.kept_unacked[table] = old_unacked
        if through <= floor:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO retention_guard (tbl, through_id) VALUES (?, ?)", [table, through])
            n = conn.execute(f'DELETE FROM "{table}" WHERE id <= ?', [through]).rowcount
            conn.execute("DELETE FROM retention_guard WHERE tbl = ?", [table])
            conn.execute("INSERT INTO retention_runs (at_ms, tbl, through_id, rows, cutoff_ms) VALUES (?, ?, ?, ?, ?)",
                         [now, table, through, n, rep.cutoff_ms])
            conn.execute("COMMIT")
            rep.deleted[table] = n
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            rep.errors.append(f"{table}: not pruned: {exc}. Fix: its delete trigger must allow ids up to "
                              "retention_guard.through_id (see docs/ledger.md, 'Adding a table')")
    log_event(ledger, "retention", None, cutoff_ms=rep.cutoff_ms, deleted=rep.deleted,
              kept_unacked=rep.kept_unacked, errors=rep.errors)
    return rep


def disk_check(ledger: Ledger, data_dir: str | Path, alert_percent: int) -> dict:
    """Disk use of data_dir; above alert_percent, log a 'disk_alert' event and warn on stderr.

    Nothing is ever dropped to make room: unacknowledged data stays until the centre has it.
    """
    usage = shutil.disk_usage(data_dir)
    percent = 100.0 * usage.used / usage.total
    unacked = {}
    if percent >= alert_percent:
        acked = acked_through(ledger.db.conn, acknowledged_seal(ledger))
        for table in ("flow_segments", "flows_long", "logins", "leases"):
            unacked[table] = ledger.db.conn.execute(
                f'SELECT COUNT(*) FROM "{table}" WHERE id > ?', [acked.get(table, 0)]).fetchone()[0]
        msg = (f"skillspot ledger: disk {percent:.1f}% full (alert at {alert_percent}%); unsynced rows kept: "
               f"{unacked}. Fix: restore the link to the centre so acknowledged data can be pruned, or add disk")
        print(msg, file=sys.stderr)
        try:
            log_event(ledger, "disk_alert", str(data_dir), percent=round(percent, 1), unacked=unacked)
        except LedgerError as exc:  # a full disk may refuse even this row; stderr still has it
            print(f"skillspot ledger: could not record the disk alert: {exc}", file=sys.stderr)
    return {"percent": percent, "alert": percent >= alert_percent, "free_bytes": usage.free, "unacked": unacked}
