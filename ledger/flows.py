"""NAT flow records: staging inserts from the flow logger, compaction into segments, lookups.

The flow logger appends NEW and DESTROY events to `flow_staging` in large transactions
(durable at once), sealing them into the hash chain in the same transaction when given the
key. `compact()` moves finished flows into compressed `flow_segments` (short flows) or
`flows_long` (flows longer than LONG_FLOW_MS), and drops NEW rows whose DESTROY has been
seen, all in one transaction, so a crash never loses or duplicates a flow. It first checks
every staged row it consumes against its seal (a row edited in staging is refused, kept and
reported, never laundered into a segment), records what it consumed in `flow_compactions`
and seals its output in the same transaction.

Readers (`flows_at`, `flows_between`) see only staged rows a seal already covers, so every
staged row `who` reads is under the chain before it can be read.
"""
from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import astuple, dataclass
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.db import Ledger, LedgerError
from ledger.seal import StagingHashes, pack_ranges, seal_in_transaction, staging_sealed_through
from ledger.segments import CODEC_ZLIB_V1, FIELDS, Flow, Segment, encode

# These two bound which segments a point-in-time lookup reads; changing them needs a
# migration that re-segments, so they are constants and not configuration.
LONG_FLOW_MS = 10 * 60 * 1000
SEGMENT_SPAN_MS = 10 * 60 * 1000
SEGMENT_MAX_FLOWS = 16384
# An open flow older than this with no DESTROY (e.g. the logger was down) is closed at
# compaction with FLAG_END_UNKNOWN; conntrack's own TCP established timeout is 5 days.
OPEN_FLOW_MAX_MS = 6 * 24 * 3600 * 1000
FLAG_END_UNKNOWN = 1   # the flow ended unseen (logger down, or no DESTROY within OPEN_FLOW_MAX_MS)
FLAG_OPEN = 2          # set only in answers: no DESTROY yet, end_ms is "now"
FLAG_FROM_DUMP = 4     # recorded from the conntrack table dump at logger start, not from its NEW event
FLAG_START_UNKNOWN = 8  # no conntrack start timestamp: the flow started at or before start_ms

STAGING_COLUMNS = ("ct_id", "open", *FIELDS)


@dataclass(frozen=True)
class FlowEvent:
    """One conntrack event as the logger stores it (end_ms None for NEW)."""

    ct_id: int | None
    open: int
    start_ms: int
    end_ms: int | None
    proto: int
    src_ip: int
    src_port: int
    pub_ip: int
    pub_port: int
    dst_ip: int
    dst_port: int
    bytes_orig: int
    bytes_reply: int
    flags: int = 0


def ip_int(text: str) -> int:
    """Dotted IPv4 to integer; raises ValueError with the bad text."""
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {text!r}") from None


def ip_str(value: int) -> str:
    """Integer to dotted IPv4."""
    return str(ipaddress.IPv4Address(value))


def stage(ledger: Ledger, events: list[FlowEvent], key: Ed25519PrivateKey | None = None) -> None:
    """Append many flow events in one transaction (raises LedgerError; nothing half-written).

    With `key`, the rows are sealed in the same transaction (what the flow logger does).
    """
    stage_rows(ledger, [astuple(e) for e in events], key)


@dataclass
class Staged:
    """What stage_rows wrote: the id of its first row (None if none) and the seal it made, if any."""

    first_id: int | None
    sealed: dict | None


def stage_rows(ledger: Ledger, rows: list[tuple], key: Ed25519PrivateKey | None = None,
               also: Callable[[sqlite3.Connection], None] | None = None,
               unsealed: tuple[int, list[tuple]] | None = None) -> Staged:
    """stage() for rows already in STAGING_COLUMNS order (the flow logger's hot path).

    `also` runs inside the same transaction (the logger's heartbeat). With `key` everything
    new is sealed in the same transaction; `unsealed` = (first id, rows) staged earlier
    without a key lets the seal hash those from memory instead of reading them back.
    """
    sql = (f"INSERT INTO flow_staging ({', '.join(STAGING_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(STAGING_COLUMNS))})")
    conn = ledger.db.conn
    first = None
    try:
        conn.execute("BEGIN IMMEDIATE")
        if rows:
            conn.executemany(sql, rows)
            # AUTOINCREMENT in one write transaction: the rows got consecutive ids ending at seq.
            first = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'flow_staging'").fetchone()[0] \
                - len(rows) + 1
        if also is not None:
            also(conn)
        sealed = None
        if key is not None:
            fresh = None
            if unsealed and unsealed[1] and (first is None or unsealed[0] + len(unsealed[1]) == first):
                fresh = {"flow_staging": (unsealed[0], unsealed[1] + rows)}
            elif rows:
                fresh = {"flow_staging": (first, rows)}
            sealed = seal_in_transaction(conn, key, ledger.now_ms(), fresh)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise LedgerError(f"could not write {len(rows)} flow events to {ledger.path}: {exc}") from exc
    return Staged(first, sealed)


def _flow_from_row(row: tuple) -> Flow:
    return Flow(*row)


def write_flows(conn: sqlite3.Connection, now_ms: int, flows: list[Flow]) -> tuple[int, int]:
    """Inside an open transaction: store finished flows as segments and long-flow rows.

    Returns (segments written, long rows written). Used by compaction and by the bench
    generator, so both produce the same on-disk form.
    """
    long_rows = [f for f in flows if f.end_ms - f.start_ms > LONG_FLOW_MS]
    short = sorted((f for f in flows if f.end_ms - f.start_ms <= LONG_FLOW_MS), key=lambda f: f.end_ms)
    if long_rows:
        conn.executemany(
            f"INSERT INTO flows_long (at_ms, {', '.join(FIELDS)}) VALUES (?{', ?' * len(FIELDS)})",
            [(now_ms, *astuple(f)) for f in long_rows])
    segments = 0
    i = 0
    while i < len(short):
        j = i
        first_end = short[i].end_ms
        while j < len(short) and j - i < SEGMENT_MAX_FLOWS and short[j].end_ms - first_end <= SEGMENT_SPAN_MS:
            j += 1
        chunk = short[i:j]
        blob, base = encode(chunk)
        conn.execute(
            "INSERT INTO flow_segments (at_ms, codec, n_flows, min_start_ms, min_end_ms, max_end_ms, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now_ms, CODEC_ZLIB_V1, len(chunk), base, chunk[0].end_ms, chunk[-1].end_ms, blob))
        segments += 1
        i = j
    return segments, len(long_rows)


def compact(ledger: Ledger, force: bool = False, key: Ed25519PrivateKey | None = None) -> dict:
    """Move finished staged flows into segments; returns counts.

    Without `force`, waits until a full segment's worth is staged or the oldest finished flow
    ended more than SEGMENT_SPAN_MS ago, so segments stay large (small segments compress badly).
    With `key` (the flow logger, the CLI), everything is sealed first and the output is sealed
    in the same transaction. A staged row that no longer matches its seal is not consumed:
    it stays in staging for `verify` to name, and an event `staging_tampered` lists it.
    """
    conn = ledger.db.conn
    now = ledger.now_ms()
    cols = f"id, ct_id, open, {', '.join(FIELDS)}"
    try:
        conn.execute("BEGIN IMMEDIATE")
        n_done, oldest_end = conn.execute(
            "SELECT COUNT(*), MIN(end_ms) FROM flow_staging WHERE open = 0").fetchone()
        if not n_done or (not force and n_done < SEGMENT_MAX_FLOWS and now - oldest_end < SEGMENT_SPAN_MS):
            conn.execute("ROLLBACK")
            return {"flows": 0, "segments": 0, "long": 0}
        if key is not None:
            seal_in_transaction(conn, key, now)  # what is consumed must be under the chain first
        top = conn.execute("SELECT MAX(id) FROM flow_staging").fetchone()[0]
        finished = conn.execute(f"SELECT {cols} FROM flow_staging WHERE open = 0 AND id <= ?", [top]).fetchall()
        # A NEW row is finished once its DESTROY is staged (same conntrack id and mapping).
        answered = conn.execute(
            f"""SELECT {cols} FROM flow_staging WHERE open = 1 AND id <= :top AND EXISTS (
                 SELECT 1 FROM flow_staging d INDEXED BY flow_staging_ct WHERE d.open = 0 AND d.ct_id = flow_staging.ct_id
                 AND d.pub_port = flow_staging.pub_port AND d.src_port = flow_staging.src_port
                 AND d.id > flow_staging.id AND d.id <= :top)""", {"top": top}).fetchall()
        answered_ids = {r[0] for r in answered}
        stale = [r for r in conn.execute(f"SELECT {cols} FROM flow_staging WHERE open = 1 AND start_ms < ?",
                                         [now - OPEN_FLOW_MAX_MS]) if r[0] not in answered_ids]
        check = StagingHashes(conn)
        refused = sorted(r[0] for r in (*finished, *answered, *stale) if check.matches(r) is False)
        bad = set(refused)
        flows = [Flow(*r[3:]) for r in finished if r[0] not in bad]
        closed = [Flow(r[3], now, *r[5:-1], r[-1] | FLAG_END_UNKNOWN) for r in stale if r[0] not in bad]
        segments, longs = write_flows(conn, now, flows + closed)
        consumed = sorted(r[0] for r in (*finished, *answered, *stale) if r[0] not in bad)
        packed = pack_ranges(consumed)
        for i in range(0, len(packed), 16):
            a, b = int.from_bytes(packed[i:i + 8], "little"), int.from_bytes(packed[i + 8:i + 16], "little")
            conn.execute("DELETE FROM flow_staging WHERE id BETWEEN ? AND ?", [a, b])
        conn.execute("INSERT INTO flow_compactions (at_ms, consumed, n_consumed, n_flows, segments, long_rows, refused) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (now, packed, len(consumed), len(flows) + len(closed), segments, longs, json.dumps(refused[:1000])))
        if refused:
            conn.execute("INSERT INTO events (at_ms, kind, subject, detail) VALUES (?, 'staging_tampered', NULL, ?)",
                         (now, json.dumps({"ids": refused[:1000], "count": len(refused)})))
        if key is not None:
            seal_in_transaction(conn, key, now)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise LedgerError(f"flow compaction failed in {ledger.path}: {exc}") from exc
    out = {"flows": len(flows) + len(closed), "segments": segments, "long": longs}
    if refused:
        out["refused"] = len(refused)
    return out


def flows_at(ledger: Ledger, pub_ip: int, pub_port: int, at_ms: int, slack_ms: int = 1000) -> list[Flow]:
    """Every flow that used public pub_ip:pub_port at at_ms, from all three stores.

    Open flows (NEW seen, no DESTROY yet) are returned with end_ms = now and FLAG_OPEN.
    """
    out: list[Flow] = []
    db = ledger.db.conn
    cols = ", ".join(FIELDS)
    for r in db.execute(
            f"SELECT {cols} FROM flows_long WHERE pub_port = ? AND start_ms <= ? AND end_ms >= ? AND pub_ip = ?",
            [pub_port, at_ms + slack_ms, at_ms - slack_ms, pub_ip]):
        out.append(Flow(*r))
    for (blob,) in db.execute(
            "SELECT data FROM flow_segments WHERE min_end_ms BETWEEN ? AND ? AND min_start_ms <= ? AND max_end_ms >= ?",
            [at_ms - SEGMENT_SPAN_MS - slack_ms, at_ms + LONG_FLOW_MS + slack_ms, at_ms + slack_ms, at_ms - slack_ms]):
        out.extend(Segment(blob).by_public(pub_ip, pub_port, at_ms, slack_ms))
    now = ledger.now_ms()
    seen_ct = set()
    for r in db.execute(
            f"SELECT open, ct_id, {cols} FROM flow_staging WHERE pub_port = ? AND pub_ip = ? AND start_ms <= ? "
            "AND id <= ? ORDER BY open", [pub_port, pub_ip, at_ms + slack_ms, staging_sealed_through(db)]):
        is_open, ct_id, *vals = r
        f = Flow(*vals)
        if is_open:
            if ct_id in seen_ct:
                continue
            f = Flow(f.start_ms, now, *vals[2:-1], f.flags | FLAG_OPEN)
        else:
            seen_ct.add(ct_id)
        if f.start_ms - slack_ms <= at_ms <= f.end_ms + slack_ms:
            out.append(f)
    return sorted(out, key=lambda f: f.start_ms)


def flows_between(ledger: Ledger, start_ms: int, end_ms: int, src_ip: int | None = None):
    """Yield finished flows overlapping [start_ms, end_ms] (optionally from one private IP), in no set order."""
    db = ledger.db.conn
    cols = ", ".join(FIELDS)
    where, args = "start_ms <= ? AND end_ms >= ?", [end_ms, start_ms]
    if src_ip is not None:
        where += " AND src_ip = ?"
        args.append(src_ip)
    for r in db.execute(f"SELECT {cols} FROM flows_long WHERE {where}", args):
        yield Flow(*r)
    for (blob,) in db.execute("SELECT data FROM flow_segments WHERE min_end_ms BETWEEN ? AND ? AND min_start_ms <= ?",
                              [start_ms - SEGMENT_SPAN_MS, end_ms, end_ms]):
        seg = Segment(blob)
        src = seg.cols["src_ip"]
        for i in range(seg.n):
            if src_ip is not None and src[i] != src_ip:
                continue
            f = seg.flow(i)
            if f.start_ms <= end_ms and f.end_ms >= start_ms:
                yield f
    for r in db.execute(f"SELECT {cols} FROM flow_staging WHERE open = 0 AND id <= ? AND {where}",
                        [staging_sealed_through(db), *args]):
        yield Flow(*r)


def latest_public_address(ledger: Ledger) -> str | None:
    """The public (masquerade source) IPv4 address of the newest flow the ledger holds, or None.

    This is the box's WAN address as its own NAT writes it into every flow, so it is the
    address an internet server logs, unless another NAT sits between the box and the
    internet (the centre also keeps the address it saw the box's requests come from)."""
    db = ledger.db.conn
    best: tuple[int, int] | None = None  # (start_ms, pub_ip)
    row = db.execute("SELECT start_ms, pub_ip FROM flow_staging WHERE id = (SELECT MAX(id) FROM flow_staging)").fetchone()
    if row is not None:
        best = (row[0], row[1])
    row = db.execute("SELECT start_ms, pub_ip FROM flows_long WHERE id = (SELECT MAX(id) FROM flows_long)").fetchone()
    if row is not None and (best is None or row[0] > best[0]):
        best = (row[0], row[1])
    row = db.execute("SELECT data FROM flow_segments WHERE id = (SELECT MAX(id) FROM flow_segments)").fetchone()
    if row is not None:
        seg = Segment(row[0])
        if seg.n:
            i = max(range(seg.n), key=seg.cols["start_off"].__getitem__)
            f = seg.flow(i)
            if best is None or f.start_ms > best[0]:
                best = (f.start_ms, f.pub_ip)
    return ip_str(best[1]) if best is not None else None
