"""The centre's audit log: every search, view and export, with who, under which case, what was
asked and how many results came back.

The table is append-only in SQLite itself: triggers refuse every UPDATE and DELETE (see
migrations/101_admin.sql), so no code path, admin page or sqlite3 shell can edit it. Each row also
holds a SHA-256 over the previous row's hash and its own content, so a row dropped or changed
outside SQLite (someone with the file and the will to drop the triggers) shows in verify().
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

GENESIS = "0" * 64


@contextmanager
def tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error), on an autocommit
    connection as the centre's AppDB hands out; inside an open transaction it just joins it."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(frozen=True)
class Entry:
    """One audit row."""

    id: int
    at_ms: int
    admin: str
    role: str
    action: str
    case_ref: str | None
    query: dict
    result_count: int | None
    ip: str


def _hash(prev: str, at_ms: int, admin: str, role: str, action: str, case_ref: str | None, query: str,
          result_count: int | None, ip: str) -> str:
    body = json.dumps([prev, at_ms, admin, role, action, case_ref, query, result_count, ip],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def record(conn: sqlite3.Connection, at_ms: int, admin: str, role: str, action: str, query: dict,
           result_count: int | None = None, case_ref: str | None = None, ip: str = "") -> int:
    """Append one entry and return its id. The chain is extended inside one write transaction."""
    q = json.dumps(query, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    with tx(conn):  # the write lock is taken before the chain's head is read
        row = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        h = _hash(prev, at_ms, admin, role, action, case_ref, q, result_count, ip)
        cur = conn.execute("INSERT INTO audit_log (at_ms, admin, role, action, case_ref, query, result_count, ip,"
                           " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (at_ms, admin, role, action, case_ref, q, result_count, ip, prev, h))
    return cur.lastrowid


def entries(conn: sqlite3.Connection, limit: int = 200, before_id: int | None = None, admin: str | None = None,
            case_ref: str | None = None, action: str | None = None) -> list[Entry]:
    """The newest entries first, optionally one admin's, one case's or one action's."""
    where, args = [], []
    for col, val in (("admin", admin), ("case_ref", case_ref), ("action", action)):
        if val:
            where.append(f"{col} = ?")
            args.append(val)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    sql = ("SELECT id, at_ms, admin, role, action, case_ref, query, result_count, ip FROM audit_log"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
    return [Entry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in conn.execute(sql, (*args, limit))]


def verify(conn: sqlite3.Connection) -> list[str]:
    """Recompute the chain; returns the problems found (empty: every row intact and none missing)."""
    problems, prev, last_id = [], GENESIS, 0
    for r in conn.execute("SELECT id, at_ms, admin, role, action, case_ref, query, result_count, ip, prev_hash, hash"
                          " FROM audit_log ORDER BY id"):
        if r[0] != last_id + 1:
            problems.append(f"rows {last_id + 1}..{r[0] - 1} are missing")
        if r[9] != prev:
            problems.append(f"row {r[0]}: does not follow the row before it")
        if _hash(r[9], *r[1:9]) != r[10]:
            problems.append(f"row {r[0]}: content changed after it was written")
        prev, last_id = r[10], r[0]
    return problems
