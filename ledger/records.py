"""Writing and reading the core records: leases, logins, logouts and the event log."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from ledger.db import Ledger, LedgerError

LEASE_EVENTS = ("add", "old", "del")


@dataclass(frozen=True)
class LeaseEvent:
    """One dnsmasq lease-script call."""

    event: str
    mac: str
    ip: str
    hostname: str | None
    expires_ms: int | None


@dataclass(frozen=True)
class Login:
    """One admission of a device, by LINE login or as a returning device."""

    method: str
    line_user_id: str
    display_name: str
    friend: bool | None
    friendship_changed: bool | None
    consent_version: str | None
    mac: str
    ip: str
    expires_ms: int


def _insert(ledger: Ledger, table: str, row: dict[str, Any]) -> int:
    try:
        return ledger.db[table].insert(row).last_pk
    except sqlite3.Error as exc:
        # Never swallow: a lost traffic record is a legal problem, the caller must know.
        raise LedgerError(f"could not write to {table} in {ledger.path}: {exc}") from exc


def record_lease(ledger: Ledger, lease: LeaseEvent) -> int:
    """Append one lease event; returns its row id."""
    if lease.event not in LEASE_EVENTS:
        raise ValueError(f"lease event must be one of {LEASE_EVENTS}, not {lease.event!r}")
    return _insert(ledger, "leases", {"at_ms": ledger.now_ms(), "box_id": ledger.box_id, **asdict(lease)})


def record_login(ledger: Ledger, login: Login) -> int:
    """Append one login; returns its row id."""
    row = asdict(login)
    for flag in ("friend", "friendship_changed"):
        row[flag] = None if row[flag] is None else int(row[flag])
    return _insert(ledger, "logins", {"at_ms": ledger.now_ms(), "box_id": ledger.box_id, **row})


def record_logout(ledger: Ledger, mac: str, reason: str, login_id: int | None = None) -> int:
    """Append the end of a device's session (revoked, expired, disconnected...).

    Low level: the session layer uses close_login, which writes at most one end per login."""
    if login_id is None:
        last = latest_login_for_mac(ledger, mac)
        login_id = last["id"] if last else None
    return _insert(ledger, "logouts", {"at_ms": ledger.now_ms(), "login_id": login_id, "mac": mac, "reason": reason})


def close_login(ledger: Ledger, login_id: int, mac: str, reason: str) -> bool:
    """Write the one logout row of login `login_id`; False (and nothing written) if it has one.

    The check and the insert run in one write transaction, so two processes ending the same
    session at once (a sweeper and an admin) still leave exactly one row with one reason."""
    conn = ledger.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM logouts WHERE login_id = ? LIMIT 1", [login_id]).fetchone()
            if done is None:
                conn.execute("INSERT INTO logouts (at_ms, login_id, mac, reason) VALUES (?, ?, ?, ?)",
                             [ledger.now_ms(), login_id, mac, reason])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise LedgerError(f"could not write to logouts in {ledger.path}: {exc}") from exc
    return done is None


def log_event(ledger: Ledger, kind: str, subject: str | None = None, **detail: Any) -> int:
    """Append to the event log (decisions, errors, admin actions)."""
    return _insert(ledger, "events", {"at_ms": ledger.now_ms(), "kind": kind, "subject": subject,
                                      "detail": json.dumps(detail, sort_keys=True, default=str)})


def latest_lease(ledger: Ledger, ip: str) -> dict | None:
    """The newest add/old lease event for `ip` (None if the newest is a release)."""
    for row in ledger.db.query("SELECT * FROM leases WHERE ip = ? ORDER BY at_ms DESC, id DESC LIMIT 1", [ip]):
        return row if row["event"] != "del" else None
    return None


def latest_login_for_mac(ledger: Ledger, mac: str) -> dict | None:
    """The newest login of this device, or None."""
    for row in ledger.db.query("SELECT * FROM logins WHERE mac = ? ORDER BY at_ms DESC, id DESC LIMIT 1", [mac]):
        return row
    return None


_LIVE = "NOT EXISTS (SELECT 1 FROM logouts o WHERE o.login_id = l.id)"


def active_logins(ledger: Ledger) -> list[dict]:
    """Logins that have neither expired nor been ended by a logout, newest first."""
    return list(ledger.db.query(
        f"SELECT l.* FROM logins l WHERE l.expires_ms > ? AND {_LIVE} ORDER BY l.at_ms DESC, l.id DESC",
        [ledger.now_ms()]))


def live_logins_of(ledger: Ledger, mac: str | None = None, line_user_id: str | None = None) -> list[dict]:
    """The unexpired logins without a logout of one device or one LINE user, newest first
    (indexed: costs the same however many devices are online)."""
    if (mac is None) == (line_user_id is None):
        raise ValueError("give exactly one of mac and line_user_id")
    column, value = ("mac", mac) if mac is not None else ("line_user_id", line_user_id)
    return list(ledger.db.query(
        f"SELECT l.* FROM logins l WHERE l.{column} = ? AND l.expires_ms > ? AND {_LIVE} "
        "ORDER BY l.at_ms DESC, l.id DESC", [value, ledger.now_ms()]))


def unclosed_logins(ledger: Ledger, expired_since_ms: int | None = None, newer_than_id: int | None = None,
                    expired_until_ms: int | None = None) -> list[dict]:
    """Logins without a logout row: live ones and, with `expired_since_ms`, those whose expiry
    fell after it (None: every unclosed login however old, for the gate's start).

    With `newer_than_id` only the logins with a larger id, and those whose expiry falls in
    (`expired_since_ms`, `expired_until_ms`]: what changed since a sweep that saw every login up
    to that id (the sweeper's incremental pass; both read through indexes)."""
    floor = -1 if expired_since_ms is None else expired_since_ms
    if newer_than_id is None:
        return list(ledger.db.query(
            f"SELECT l.* FROM logins l WHERE l.expires_ms > ? AND {_LIVE} ORDER BY l.at_ms, l.id", [floor]))
    until = expired_until_ms if expired_until_ms is not None else ledger.now_ms()
    return list(ledger.db.query(
        f"SELECT l.* FROM logins l WHERE l.id > ? AND {_LIVE} "
        f"UNION SELECT l.* FROM logins l WHERE l.expires_ms > ? AND l.expires_ms <= ? AND {_LIVE} "
        "ORDER BY at_ms, id", [newer_than_id, floor, until]))


def last_login_id(ledger: Ledger) -> int:
    """The largest login id so far (0 for none)."""
    return int(ledger.db.execute("SELECT coalesce(max(id), 0) FROM logins").fetchone()[0])


def last_line_login(ledger: Ledger, mac: str) -> dict | None:
    """The newest LINE (not "returning") login of `mac`, or None."""
    for row in ledger.db.query("SELECT * FROM logins WHERE mac = ? AND method = 'line' "
                               "ORDER BY at_ms DESC, id DESC LIMIT 1", [mac]):
        return row
    return None


def ended_since(ledger: Ledger, mac: str, since_ms: int, reasons: tuple[str, ...]) -> bool:
    """Whether a session of `mac` ended for one of `reasons` at or after `since_ms`."""
    marks = ",".join("?" for _ in reasons)
    found = ledger.db.execute(f"SELECT 1 FROM logouts WHERE mac = ? AND at_ms >= ? AND reason IN ({marks}) LIMIT 1",
                              [mac, since_ms, *reasons]).fetchone()
    return found is not None


def events_since(ledger: Ledger, kind: str, since_ms: int) -> list[dict]:
    """Events of one kind at or after `since_ms`, oldest first, detail decoded."""
    out = []
    for row in ledger.db.query("SELECT * FROM events WHERE kind = ? AND at_ms >= ? ORDER BY at_ms, id", [kind, since_ms]):
        row["detail"] = json.loads(row["detail"] or "{}")
        out.append(row)
    return out


def unclosed_ids(ledger: Ledger, login_ids: list[int]) -> list[int]:
    """Which of these logins have no logout row yet."""
    if not login_ids:
        return []
    marks = ",".join("?" for _ in login_ids)
    return [r[0] for r in ledger.db.execute(
        f"SELECT l.id FROM logins l WHERE l.id IN ({marks}) AND {_LIVE}", login_ids).fetchall()]


def events_of(ledger: Ledger, subject: str, kind: str, since_ms: int = 0) -> list[dict]:
    """Events of one kind about one subject (a MAC, an address), newest first, detail decoded."""
    out = []
    for row in ledger.db.query("SELECT * FROM events WHERE subject = ? AND kind = ? AND at_ms >= ? "
                               "ORDER BY at_ms DESC, id DESC", [subject, kind, since_ms]):
        row["detail"] = json.loads(row["detail"] or "{}")
        out.append(row)
    return out


def rows(ledger: Ledger, table: str, limit: int = 20) -> Iterator[dict]:
    """The newest `limit` rows of a core table, oldest first (for `skillspot ledger show`)."""
    if table not in ("leases", "logins", "logouts", "events"):
        raise ValueError(f"unknown ledger table {table!r}")
    newest = list(ledger.db.query(f"SELECT * FROM {table} ORDER BY id DESC LIMIT ?", [limit]))
    return iter(reversed(newest))
