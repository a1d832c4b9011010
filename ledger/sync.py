"""Sync bookkeeping on the ledger (every SQL statement of boxsync/ lives here).

- Which tables are sent: every sealed table (discovered, like seal.py) except the box's own
  bookkeeping (syncapi.rows.NOT_SENT). A table added by a later migration is sent without a
  code change.
- High-water marks are durable: each formed batch records the id range (from, to] it covers
  per table in `sync_batches`; the next batch starts after the largest `to`. A batch is formed
  once (in one IMMEDIATE transaction, so no concurrent writer's row can slip below a mark) and
  its bytes are rebuilt identically on every retry; rows are append-only, so the rebuilt batch
  hashes the same — if it does not, the ledger was changed and sync stops with an error.
- Acknowledgements (`sync_acks`, with the centre's signed receipt) move the acked marks; the
  newest seal whose every synced row is acknowledged is then recorded with
  `retention.acknowledge`, which is what lets retention delete anything.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from syncapi import batch as sbatch
from syncapi.rows import NOT_SENT

from ledger.db import Ledger, LedgerError
from ledger.retention import acknowledge, acknowledged_seal
from ledger.seal import _columns, sealed_tables
from ledger.segments import FIELDS, Segment

FLOW_SEGMENTS = "flow_segments"
# Time column that dates a row for "oldest unsent" (default at_ms).
TIME_COLUMN = {"flow_segments": "max_end_ms", "flows_long": "end_ms"}


@dataclass(frozen=True)
class FormedBatch:
    """A batch ready to send: its seq, hash and the compressed wire body."""

    seq: int
    hash: str
    prev_hash: str
    body: bytes
    rows: int
    ranges: dict


def sync_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables a box sends, sorted by name."""
    return [t for t in sealed_tables(conn) if t not in NOT_SENT]


def _marks(conn: sqlite3.Connection, through_seq: int | None = None) -> dict[str, int]:
    sql, args = "SELECT ranges FROM sync_batches", []
    if through_seq is not None:
        sql += " WHERE seq <= ?"
        args.append(through_seq)
    marks: dict[str, int] = {}
    for (ranges,) in conn.execute(sql, args):
        for table, (_, to) in json.loads(ranges).items():
            marks[table] = max(marks.get(table, 0), to)
    return marks


def formed_marks(ledger: Ledger) -> dict[str, int]:
    """Per table, the highest row id already put into a batch."""
    return _marks(ledger.db.conn)


def last_acked_seq(ledger: Ledger) -> int:
    """The newest batch the centre acknowledged (acks arrive in seq order; 0: none)."""
    return ledger.db.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sync_acks").fetchone()[0]


def acked_marks(ledger: Ledger) -> dict[str, int]:
    """Per table, the highest row id the centre has acknowledged."""
    return _marks(ledger.db.conn, last_acked_seq(ledger))


def _value(v):
    return v.hex() if isinstance(v, (bytes, bytearray, memoryview)) else v


def _section(conn: sqlite3.Connection, table: str, after: int, through: int) -> dict:
    """Rows (after, through] of a table as a batch section."""
    if table == FLOW_SEGMENTS:
        rows = []
        for seg_id, blob in conn.execute("SELECT id, data FROM flow_segments WHERE id > ? AND id <= ? ORDER BY id",
                                         (after, through)):
            seg = Segment(blob)
            c, n, base = seg.cols, seg.n, seg.base
            # Column-wise (C loops over arrays), then zipped into rows: the catch-up hot path.
            starts = [base + so for so in c["start_off"]]
            ends = [st + du for st, du in zip(starts, c["duration"])]
            src_ports = [x ^ p for x, p in zip(c["port_xor"], c["pub_port"])]
            rows.extend(map(list, zip([seg_id] * n, range(n), starts, ends, c["proto"], c["src_ip"], src_ports,
                                      c["pub_ip"], c["pub_port"], c["dst_ip"], c["dst_port"], c["bytes_orig"],
                                      c["bytes_reply"], c["flags"])))
        return {"from": after, "to": through, "columns": ["id", "idx", *FIELDS], "rows": rows}
    cols = _columns(conn, table)
    sel = ", ".join(f'"{c}"' for c in cols)
    rows = [[r[0], *(_value(v) for v in r[1:])]
            for r in conn.execute(f'SELECT id, {sel} FROM "{table}" WHERE id > ? AND id <= ? ORDER BY id', (after, through))]
    return {"from": after, "to": through, "columns": ["id", *cols], "rows": rows}


def _plan(conn: sqlite3.Connection, marks: dict[str, int], max_rows: int) -> dict[str, tuple[int, int]]:
    """Which id range of each table the next batch takes: oldest tables' rows first, at most ~max_rows."""
    plan: dict[str, tuple[int, int]] = {}
    budget = max_rows
    for table in sync_tables(conn):
        after = marks.get(table, 0)
        if budget <= 0:
            break
        if table == FLOW_SEGMENTS:
            through, n = after, 0
            for seg_id, n_flows in conn.execute("SELECT id, n_flows FROM flow_segments WHERE id > ? ORDER BY id", (after,)):
                if n and n + n_flows > budget:
                    break
                through, n = seg_id, n + n_flows
        else:
            r = conn.execute(f'SELECT MAX(id), COUNT(*) FROM (SELECT id FROM "{table}" WHERE id > ? ORDER BY id LIMIT ?)',
                             (after, budget)).fetchone()
            through, n = (r[0] or after), r[1]
        if through > after:
            plan[table] = (after, through)
            budget -= n
    return plan


def unsent(ledger: Ledger) -> dict:
    """Rows not yet put into any batch: {"rows": n, "oldest_ms": t or None, "tables": {table: n}}."""
    conn = ledger.db.conn
    marks = formed_marks(ledger)
    out: dict = {"rows": 0, "oldest_ms": None, "tables": {}}
    for table in sync_tables(conn):
        after = marks.get(table, 0)
        cols = _columns(conn, table)
        tcol = TIME_COLUMN.get(table, "at_ms" if "at_ms" in cols else None)
        count_expr = "COALESCE(SUM(n_flows), 0)" if table == FLOW_SEGMENTS else "COUNT(*)"
        oldest = f"MIN({tcol})" if tcol else "NULL"
        n, t = conn.execute(f'SELECT {count_expr}, {oldest} FROM "{table}" WHERE id > ?', (after,)).fetchone()
        if n:
            out["tables"][table] = n
            out["rows"] += n
            if t is not None and (out["oldest_ms"] is None or t < out["oldest_ms"]):
                out["oldest_ms"] = t
    return out


def form_batch(ledger: Ledger, max_rows: int) -> FormedBatch | None:
    """Take the next rows (after the high-water marks) into a new batch; None if nothing is new."""
    conn = ledger.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        marks = _marks(conn)
        plan = _plan(conn, marks, max_rows)
        if not plan:
            conn.execute("ROLLBACK")
            return None
        prev = conn.execute("SELECT seq, hash FROM sync_batches ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (prev[0] + 1, prev[1]) if prev else (1, sbatch.GENESIS)
        now = ledger.now_ms()
        tables = {t: _section(conn, t, a, b) for t, (a, b) in plan.items()}
        _, h, body = sbatch.build(ledger.box_id, seq, prev_hash, now, tables)
        rows = sum(len(s["rows"]) for s in tables.values())
        ranges = {t: [a, b] for t, (a, b) in plan.items()}
        conn.execute("INSERT INTO sync_batches (at_ms, seq, prev_hash, hash, ranges, rows) VALUES (?, ?, ?, ?, ?, ?)",
                     (now, seq, prev_hash, h, json.dumps(ranges, sort_keys=True), rows))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise LedgerError(f"could not form a sync batch in {ledger.path}: {exc}") from exc
    return FormedBatch(seq, h, prev_hash, body, rows, ranges)


def rebuild(ledger: Ledger, seq: int) -> FormedBatch:
    """The exact bytes of an already formed batch (for a retry); LedgerError if the rows changed."""
    conn = ledger.db.conn
    row = conn.execute("SELECT at_ms, prev_hash, hash, ranges, rows FROM sync_batches WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        raise LedgerError(f"sync batch {seq} was never formed")
    at, prev_hash, h, ranges_json, n = row
    ranges = json.loads(ranges_json)
    conn.execute("BEGIN")
    try:
        tables = {t: _section(conn, t, a, b) for t, (a, b) in ranges.items()}
    finally:
        conn.execute("COMMIT")
    _, h2, body = sbatch.build(ledger.box_id, seq, prev_hash, at, tables)
    if h2 != h:
        raise LedgerError(f"sync batch {seq}: the ledger rows it covers changed since it was formed (hash {h2} "
                          f"instead of {h}); run `skillspot ledger verify`")
    return FormedBatch(seq, h, prev_hash, body, n, ranges)


def pending_seqs(ledger: Ledger) -> list[int]:
    """Formed batches the centre has not acknowledged, oldest first."""
    return [r[0] for r in ledger.db.conn.execute(
        "SELECT seq FROM sync_batches WHERE seq > ? ORDER BY seq", (last_acked_seq(ledger),))]


def record_ack(ledger: Ledger, seq: int, receipt: str, received_ms: int | None) -> int | None:
    """Record the centre's acknowledgement of batch `seq` (and every earlier one); then move the
    retention acknowledgement to the newest seal fully covered. Returns that seal id or None.
    """
    conn = ledger.db.conn
    if conn.execute("SELECT 1 FROM sync_batches WHERE seq = ?", (seq,)).fetchone() is None:
        raise LedgerError(f"the centre acknowledged batch {seq}, which this box never formed")
    if seq > last_acked_seq(ledger):
        conn.execute("INSERT INTO sync_acks (at_ms, seq, receipt, received_ms) VALUES (?, ?, ?, ?)",
                     (ledger.now_ms(), seq, receipt, received_ms))
    return _advance_seal_ack(ledger)


def _advance_seal_ack(ledger: Ledger) -> int | None:
    conn = ledger.db.conn
    marks = acked_marks(ledger)
    synced = set(sync_tables(conn))
    current = acknowledged_seal(ledger)
    best, useful = current, False
    for seal_id, ranges in conn.execute("SELECT id, ranges FROM seals WHERE id > ? ORDER BY id", (current,)):
        covered = True
        touches = False
        for table, r in json.loads(ranges).items():
            if table not in synced:
                continue  # bookkeeping tables (never pruned) do not hold the acknowledgement back
            touches = True
            if r["to"] > marks.get(table, 0):
                covered = False
                break
        if not covered:
            break
        best, useful = seal_id, useful or touches
    # Acknowledge only when a seal with synced rows is newly covered: an ack is itself a sealed row,
    # and acknowledging seals that cover only acks would go round for ever.
    if best > current and useful:
        acknowledge(ledger, best, receipt=f"sync seq {last_acked_seq(ledger)}")
        return best
    return None


def status(ledger: Ledger) -> dict:
    """Sync progress for `skillspot sync status`, the heartbeat and the admin page."""
    conn = ledger.db.conn
    un = unsent(ledger)
    last = conn.execute("SELECT seq, at_ms, received_ms FROM sync_acks ORDER BY seq DESC LIMIT 1").fetchone()
    formed = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sync_batches").fetchone()[0]
    pend = pending_seqs(ledger)
    oldest_pending = None
    if pend:
        oldest_pending = conn.execute("SELECT at_ms FROM sync_batches WHERE seq = ?", (pend[0],)).fetchone()[0]
    pending_rows = conn.execute("SELECT COALESCE(SUM(rows), 0) FROM sync_batches WHERE seq > ?",
                                (last[0] if last else 0,)).fetchone()[0]
    now = ledger.now_ms()
    oldest = [t for t in (un["oldest_ms"], oldest_pending) if t is not None]
    return {
        "formed_seq": formed, "last_acked_seq": last[0] if last else 0,
        "last_ack_ms": last[1] if last else None, "pending_batches": len(pend), "pending_rows": pending_rows,
        "unsent_rows": un["rows"], "unsent_tables": un["tables"], "oldest_unsent_ms": un["oldest_ms"],
        "lag_ms": (now - min(oldest)) if oldest else 0, "acknowledged_seal": acknowledged_seal(ledger),
        "sent_marks": formed_marks(ledger), "acked_marks": acked_marks(ledger),
    }
