"""Flow-logger outages: when NAT flows may be missing from the ledger, and why.

While `skillspot ledger flowlog` is not listening, conntrack events are lost for good: a flow
that starts and ends in that time leaves no record. The logger keeps a liveness mark
(`flowlog_heartbeat`, rewritten in the transaction of every flush and at least every tick
while idle) saying until when every event is stored. At its next start it writes the time
from that mark to the moment its new subscription was in place as a sealed `flowlog_gaps`
row, records the flows the conntrack table still holds, and closes (end unknown) the flows
it had seen open that the table no longer holds.

For the admin health page: `recent_gaps(ledger, since_ms)` and `logger_status(ledger)`.
For answers: `gaps_covering(ledger, at_ms)` and `annotate(ledger, answers, at_ms)`, which
`ledger.query.who` applies so every answer inside a gap says it may be incomplete.
"""
from __future__ import annotations

import json
import sqlite3

from ledger.db import Ledger

# A heartbeat older than this many ticks means the logger is not running (or is stuck).
STALE_TICKS = 3


def record_gap(conn: sqlite3.Connection, at_ms: int, box_id: str, from_ms: int, to_ms: int, reason: str,
               **detail) -> int:
    """Inside the caller's transaction: append one gap row; returns its id."""
    cur = conn.execute("INSERT INTO flowlog_gaps (at_ms, box_id, from_ms, to_ms, reason, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (at_ms, box_id, from_ms, to_ms, reason, json.dumps(detail, sort_keys=True, default=str)))
    return cur.lastrowid


def _gap(row: tuple) -> dict:
    gid, at_ms, box_id, from_ms, to_ms, reason, detail = row
    try:
        extra = json.loads(detail)
    except ValueError:
        extra = {"unreadable": detail}
    return {"id": gid, "at_ms": at_ms, "box_id": box_id, "from_ms": from_ms, "to_ms": to_ms,
            "duration_ms": to_ms - from_ms, "reason": reason, "detail": extra, "ongoing": False}


def logger_status(ledger: Ledger) -> dict | None:
    """The flow logger's last mark: running or not, and since when everything is stored.

    Returns None if no logger ever ran on this ledger, else a dict with run_id, pid,
    started_ms, complete_ms (every event before it is stored), last_event_ms, stopped_ms
    (None unless it stopped cleanly), tick_ms and `running` (a fresh mark and no stop).
    """
    row = ledger.db.conn.execute(
        "SELECT run_id, pid, started_ms, complete_ms, last_event_ms, stopped_ms, tick_ms "
        "FROM flowlog_heartbeat WHERE id = 1").fetchone()
    if row is None:
        return None
    keys = ("run_id", "pid", "started_ms", "complete_ms", "last_event_ms", "stopped_ms", "tick_ms")
    s = dict(zip(keys, row))
    s["running"] = s["stopped_ms"] is None and ledger.now_ms() - s["complete_ms"] <= STALE_TICKS * s["tick_ms"]
    return s


def _ongoing(ledger: Ledger) -> dict | None:
    """The outage going on now (logger stopped or its mark is stale), as a gap without an end."""
    s = logger_status(ledger)
    if s is None or s["running"]:
        return None
    now = ledger.now_ms()
    return {"id": None, "at_ms": now, "box_id": ledger.box_id, "from_ms": s["complete_ms"], "to_ms": None,
            "duration_ms": now - s["complete_ms"], "ongoing": True,
            "reason": "logger stopped" if s["stopped_ms"] is not None else "logger not running (no fresh heartbeat)",
            "detail": {"run_id": s["run_id"]}}


def recent_gaps(ledger: Ledger, since_ms: int, include_ongoing: bool = True) -> list[dict]:
    """Gaps that ended at or after `since_ms`, oldest first (for the admin health page).

    Each is a dict: id, at_ms (when recorded), box_id, from_ms, to_ms, duration_ms, reason,
    detail (dict), ongoing. With include_ongoing, an outage going on now is added last with
    to_ms None and ongoing True (it becomes a recorded gap when the logger starts again).
    """
    rows = ledger.db.conn.execute(
        "SELECT id, at_ms, box_id, from_ms, to_ms, reason, detail FROM flowlog_gaps WHERE to_ms >= ? "
        "ORDER BY from_ms, id", [since_ms]).fetchall()
    out = [_gap(r) for r in rows]
    if include_ongoing:
        now_gap = _ongoing(ledger)
        if now_gap is not None:
            out.append(now_gap)
    return out


def gaps_covering(ledger: Ledger, at_ms: int, slack_ms: int = 0) -> list[dict]:
    """Recorded or ongoing gaps that contain at_ms (widened by slack_ms on both sides)."""
    rows = ledger.db.conn.execute(
        "SELECT id, at_ms, box_id, from_ms, to_ms, reason, detail FROM flowlog_gaps "
        "WHERE to_ms >= ? AND from_ms <= ? ORDER BY from_ms, id", [at_ms - slack_ms, at_ms + slack_ms]).fetchall()
    out = [_gap(r) for r in rows]
    now_gap = _ongoing(ledger)
    if now_gap is not None and now_gap["from_ms"] <= at_ms + slack_ms:
        out.append(now_gap)
    return out


def annotate(ledger: Ledger, answers: list[dict], at_ms: int, slack_ms: int = 0) -> list[dict]:
    """Add `gaps` and `may_be_incomplete` to each `who` answer; returns the gaps found.

    An answer inside a gap may be incomplete: another flow may have used the same public
    address and port in the time the logger was not listening.
    """
    found = gaps_covering(ledger, at_ms, slack_ms)
    for a in answers:
        a["gaps"] = found
        a["may_be_incomplete"] = bool(found)
    return found
