"""The ledger's core: migrations, append-only rows, the record functions."""
from __future__ import annotations

import sqlite3

import pytest

from ledger.db import LedgerError, migrations, open_ledger
from ledger.records import (LeaseEvent, Login, active_logins, latest_lease, latest_login_for_mac, log_event,
                            record_lease, record_login, record_logout, rows)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def login(mac: str = "02:00:00:00:00:01", expires_ms: int = 1_800_000_600_000) -> Login:
    return Login(method="line", line_user_id="U" + "a" * 32, display_name="สมชาย", friend=True,
                 friendship_changed=False, consent_version="2026-11", mac=mac, ip="10.99.0.60", expires_ms=expires_ms)


def test_schema_is_migrated_in_wal_mode(tmp_path):
    ledger = open_ledger(tmp_path / "l.sqlite", "box-1")
    version = ledger.db.execute("PRAGMA user_version").fetchone()[0]
    assert version == migrations()[-1][0]
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()
    again = open_ledger(tmp_path / "l.sqlite", "box-1")  # reopening applies nothing twice
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == version


def test_rows_cannot_be_changed_or_deleted(tmp_path):
    ledger = open_ledger(tmp_path / "l.sqlite", "box-1")
    record_lease(ledger, LeaseEvent("add", "02:00:00:00:00:01", "10.99.0.60", "p", None))
    record_login(ledger, login())
    log_event(ledger, "test", "x", a=1)
    for table in ("leases", "logins", "events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.db.execute(f"UPDATE {table} SET at_ms = 0")
        with pytest.raises(sqlite3.DatabaseError, match="retention"):
            ledger.db.execute(f"DELETE FROM {table}")


def test_login_life_cycle_with_a_controlled_clock(tmp_path):
    clock = Clock()
    ledger = open_ledger(tmp_path / "l.sqlite", "box-1", clock=clock)
    first = record_login(ledger, login(expires_ms=int((clock.t + 600) * 1000)))
    assert [r["id"] for r in active_logins(ledger)] == [first]
    clock.t += 601
    assert active_logins(ledger) == []
    second = record_login(ledger, login(expires_ms=int((clock.t + 600) * 1000)))
    assert latest_login_for_mac(ledger, "02:00:00:00:00:01")["id"] == second
    record_logout(ledger, "02:00:00:00:00:01", "revoked")
    assert active_logins(ledger) == []
    assert [r["login_id"] for r in rows(ledger, "logouts")] == [second]


def test_latest_lease_follows_release(tmp_path):
    ledger = open_ledger(tmp_path / "l.sqlite", "box-1")
    record_lease(ledger, LeaseEvent("add", "02:00:00:00:00:01", "10.99.0.60", None, None))
    assert latest_lease(ledger, "10.99.0.60")["mac"] == "02:00:00:00:00:01"
    record_lease(ledger, LeaseEvent("del", "02:00:00:00:00:01", "10.99.0.60", None, None))
    assert latest_lease(ledger, "10.99.0.60") is None
    with pytest.raises(ValueError):
        record_lease(ledger, LeaseEvent("renew", "02:00:00:00:00:01", "10.99.0.60", None, None))


def test_an_unopenable_ledger_says_so(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        open_ledger(tmp_path / "dir.sqlite", "box-1")


def test_processes_opening_a_new_ledger_at_once_migrate_it_once(tmp_path):
    # gunicorn workers and dnsmasq's lease hook all open the ledger when the box starts.
    import subprocess
    import sys
    code = ("import sys; from ledger.db import open_ledger; "
            "l = open_ledger(sys.argv[1], 'box-1'); print(l.db.execute('PRAGMA user_version').fetchone()[0])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "new.sqlite")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert {out.strip() for out, _ in results} == {str(migrations()[-1][0])}
