"""Writing and reading the RADIUS records: access decisions, accounting and Disconnects.

Writers use plain INSERT statements on the ledger's connection so that several of them
can share one transaction (`transaction`): the RADIUS server commits a burst of requests
at once and answers them only after the commit.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Protocol

from ledger.db import Ledger, LedgerError

# RFC 2866 Acct-Status-Type values hostapd sends.
STATUS_START, STATUS_STOP, STATUS_INTERIM, STATUS_ON, STATUS_OFF = 1, 2, 3, 7, 8
STATUS_NAMES = {STATUS_START: "start", STATUS_STOP: "stop", STATUS_INTERIM: "interim-update",
                STATUS_ON: "accounting-on", STATUS_OFF: "accounting-off"}


@dataclass(frozen=True)
class AuthDecision:
    """One answered MAC-authorisation Access-Request."""

    nas_address: str
    nas_identifier: str | None
    mac: str | None
    user_name: str
    called_station_id: str | None
    decision: str
    reason: str
    session_timeout: int | None = None
    idle_timeout: int | None = None


@dataclass(frozen=True)
class AcctRecord:
    """One Accounting-Request as stored; octets are 64-bit totals (Gigawords folded in)."""

    nas_address: str
    nas_identifier: str | None
    status_type: int
    acct_session_id: str | None
    mac: str | None
    user_name: str | None
    called_station_id: str | None
    framed_ip: str | None
    input_octets: int | None
    output_octets: int | None
    input_packets: int | None
    output_packets: int | None
    session_time: int | None
    terminate_cause: int | None
    event_ms: int | None
    delay_time: int | None
    dedupe_key: str


class DisconnectOutcome(Protocol):
    """What `record_disconnect` needs of radius.das.DisconnectResult."""

    acked: bool
    error_cause: int | None
    detail: str


@contextmanager
def transaction(ledger: Ledger) -> Iterator[None]:
    """Group several writes into one commit; rolls back and raises LedgerError on failure."""
    conn = ledger.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise LedgerError(f"could not start a transaction in {ledger.path}: {exc}") from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failed COMMIT may already have ended the transaction
        if isinstance(exc, sqlite3.Error):
            raise LedgerError(f"could not commit to {ledger.path}: {exc}") from exc
        raise


def _insert(ledger: Ledger, table: str, row: dict, *, unique: str | None = None) -> int | None:
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    # ON CONFLICT on the one unique column, not INSERT OR IGNORE: that would also silently
    # skip a row violating NOT NULL or CHECK, losing a record without an error.
    tail = f" ON CONFLICT ({unique}) DO NOTHING" if unique else ""
    try:
        cur = ledger.db.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks}){tail}", list(row.values()))
    except sqlite3.Error as exc:
        # Never swallow: a lost traffic record is a legal problem, the caller must know.
        raise LedgerError(f"could not write to {table} in {ledger.path}: {exc}") from exc
    return cur.lastrowid if cur.rowcount == 1 else None


def record_auth_decision(ledger: Ledger, decision: AuthDecision) -> int:
    """Append one access decision; returns its row id."""
    if decision.decision not in ("accept", "reject"):
        raise ValueError(f"decision must be 'accept' or 'reject', not {decision.decision!r}")
    row_id = _insert(ledger, "radius_auth", {"at_ms": ledger.now_ms(), "box_id": ledger.box_id, **asdict(decision)})
    assert row_id is not None
    return row_id


def record_accounting(ledger: Ledger, record: AcctRecord) -> int | None:
    """Append one accounting record; returns its row id, or None if it is a retransmission
    already stored (same dedupe_key)."""
    if not record.dedupe_key:
        raise ValueError("an accounting record needs a dedupe_key")
    return _insert(ledger, "radius_acct", {"at_ms": ledger.now_ms(), "box_id": ledger.box_id, **asdict(record)},
                   unique="dedupe_key")


def record_disconnect(ledger: Ledger, mac: str, result: DisconnectOutcome) -> int:
    """Append the outcome of one Disconnect-Request (ACK, NAK or no answer); returns its row id.

    Commits on its own unless called inside `transaction`."""
    row_id = _insert(ledger, "radius_disconnects", {
        "at_ms": ledger.now_ms(), "box_id": ledger.box_id, "mac": mac, "acked": int(bool(result.acked)),
        "error_cause": result.error_cause, "detail": result.detail})
    assert row_id is not None
    return row_id


def auth_decisions(ledger: Ledger, mac: str | None = None, limit: int = 100) -> list[dict]:
    """The newest access decisions (for one MAC if given), oldest first."""
    where, args = ("WHERE mac = ?", [mac]) if mac else ("", [])
    found = list(ledger.db.query(f"SELECT * FROM radius_auth {where} ORDER BY id DESC LIMIT ?", [*args, limit]))
    return found[::-1]


def accounting_records(ledger: Ledger, *, acct_session_id: str | None = None, mac: str | None = None,
                       limit: int = 1000) -> list[dict]:
    """Accounting rows, oldest first, optionally for one session or one MAC."""
    clauses, args = [], []
    if acct_session_id is not None:
        clauses.append("acct_session_id = ?")
        args.append(acct_session_id)
    if mac is not None:
        clauses.append("mac = ?")
        args.append(mac)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    found = list(ledger.db.query(f"SELECT * FROM radius_acct {where} ORDER BY id DESC LIMIT ?", [*args, limit]))
    return found[::-1]


def disconnects(ledger: Ledger, mac: str | None = None, limit: int = 100) -> list[dict]:
    """Recorded Disconnect outcomes, oldest first."""
    where, args = ("WHERE mac = ?", [mac]) if mac else ("", [])
    found = list(ledger.db.query(f"SELECT * FROM radius_disconnects {where} ORDER BY id DESC LIMIT ?", [*args, limit]))
    return found[::-1]


def open_sessions(ledger: Ledger) -> list[dict]:
    """Sessions with a Start but no Stop, and no Accounting-On/Off from their NAS since the
    Start (hostapd means by On/Off that all of that NAS's sessions are over). Newest row of
    each session."""
    return list(ledger.db.query(
        """SELECT a.* FROM radius_acct a
           WHERE a.id = (SELECT MAX(b.id) FROM radius_acct b WHERE b.acct_session_id = a.acct_session_id
                                                          AND b.nas_address = a.nas_address)
             AND a.status_type IN (?, ?)
             AND NOT EXISTS (SELECT 1 FROM radius_acct r WHERE r.status_type IN (?, ?)
                             AND r.nas_address = a.nas_address
                             AND r.nas_identifier IS a.nas_identifier AND r.id > a.id)
           ORDER BY a.id""", [STATUS_START, STATUS_INTERIM, STATUS_ON, STATUS_OFF]))
