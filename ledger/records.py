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
    """Append the end of a device's session (revoked, expired, disconnected...)."""
    if login_id is None:
        last = latest_login_for_mac(ledger, mac)
        login_id = last["id"] if last else None
    return _insert(ledger, "logouts", {"at_ms": ledger.now_ms(), "login_id": login_id, "mac": mac, "reason": reason})


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


def active_logins(ledger: Ledger) -> list[dict]:
    """Logins that have neither expired nor been ended by a logout, newest first."""
    return list(ledger.db.query(
        """SELECT l.* FROM logins l
           WHERE l.expires_ms > ? AND NOT EXISTS (SELECT 1 FROM logouts o WHERE o.login_id = l.id)
           ORDER BY l.at_ms DESC""", [ledger.now_ms()]))


def rows(ledger: Ledger, table: str, limit: int = 20) -> Iterator[dict]:
    """The newest `limit` rows of a core table, oldest first (for `skillspot ledger show`)."""
    if table not in ("leases", "logins", "logouts", "events"):
        raise ValueError(f"unknown ledger table {table!r}")
    newest = list(ledger.db.query(f"SELECT * FROM {table} ORDER BY id DESC LIMIT ?", [limit]))
    return iter(reversed(newest))
