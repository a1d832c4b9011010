"""Retention with a controllable clock: only old AND acknowledged data goes; verify stays clean."""
from __future__ import annotations

import sqlite3

import pytest

from ledger.db import LedgerError, open_ledger
from ledger.flows import FlowEvent, compact, ip_int, stage
from ledger.records import LeaseEvent, Login, log_event, record_lease, record_login, record_logout
from ledger.retention import DAY_MS, acknowledge, acknowledged_seal, disk_check, prune
from ledger.seal import load_or_create_key, seal, verify
from ledger_clock_util import Clock

T0 = 1_790_000_000_000


@pytest.fixture
def env(tmp_path):
    clock = Clock(T0)
    led = open_ledger(tmp_path / "ledger.sqlite", "skl-box", clock)
    key = load_or_create_key(tmp_path)
    yield led, key, clock, tmp_path
    led.close()


def day_of_traffic(led, clock, n: int) -> None:
    """One login, lease and a few flows at the clock's current time."""
    mac, ip = f"02:00:00:00:00:{n:02x}", f"10.77.0.{n}"
    record_lease(led, LeaseEvent("add", mac, ip, None, clock.ms + 3_600_000))
    record_login(led, Login("line", f"U{n:032x}", f"user {n}", None, None, "2026-11", mac, ip, clock.ms + 3_600_000))
    record_logout(led, mac, "expired")
    stage(led, [FlowEvent(i, 0, clock.ms + i, clock.ms + i + 10, 6, ip_int(ip), 40000 + i, ip_int("203.0.113.1"),
                          30000 + i, ip_int("203.0.113.2"), 443, 1, 2) for i in range(20)])
    compact(led, force=True)


def count(led, table: str) -> int:
    return led.db.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_nothing_unacknowledged_is_ever_pruned(env):
    led, key, clock, _ = env
    day_of_traffic(led, clock, 1)
    seal(led, key)
    clock.ms += 400 * DAY_MS
    rep = prune(led, 90)
    assert rep.deleted == {} and rep.kept_unacked["logins"] == 1 and rep.kept_unacked["flow_segments"] == 1
    assert count(led, "logins") == 1 and count(led, "flow_segments") == 1


def test_old_acknowledged_data_goes_recent_stays_and_verify_is_clean(env):
    led, key, clock, _ = env
    day_of_traffic(led, clock, 1)
    s1 = seal(led, key)
    clock.ms += 60 * DAY_MS
    day_of_traffic(led, clock, 2)
    s2 = seal(led, key)
    acknowledge(led, s2["id"], "centre receipt 42")
    assert acknowledged_seal(led) == s2["id"]
    clock.ms += 31 * DAY_MS            # day 91 after the first, day 31 after the second
    rep = prune(led, 90)
    assert rep.deleted == {"logouts": 1, "leases": 1, "logins": 1, "flow_segments": 1}, rep
    assert count(led, "logins") == 1 and count(led, "flow_segments") == 1
    seal(led, key)
    assert verify(led, key.public_key()).ok
    # a day later nothing more is old enough
    clock.ms += DAY_MS
    assert prune(led, 90).deleted == {}
    with pytest.raises(LedgerError):
        acknowledge(led, s1["id"])    # acks never move backwards
    with pytest.raises(LedgerError):
        acknowledge(led, 999)


def test_longer_retention_keeps_more(env):
    led, key, clock, _ = env
    day_of_traffic(led, clock, 1)
    acknowledge(led, seal(led, key)["id"])
    clock.ms += 100 * DAY_MS
    day_of_traffic(led, clock, 2)     # newer rows: retention never deletes a table's newest row
    assert prune(led, 365).deleted == {}
    assert prune(led, 90).deleted != {}


def test_retention_below_the_legal_floor_is_refused(env):
    led, *_ = env
    with pytest.raises(LedgerError, match="legal floor"):
        prune(led, 89)


def test_rows_cannot_be_deleted_outside_retention(env):
    led, key, clock, _ = env
    day_of_traffic(led, clock, 1)
    led.db.conn.execute("INSERT INTO radius_acct (at_ms, box_id, nas_address, status_type, dedupe_key) "
                        "VALUES (1, 'b', '127.0.0.1', 1, 'k')")
    log_event(led, "x", None)
    seal(led, key)
    for table in ("leases", "logins", "logouts", "events", "flow_segments", "seals", "radius_acct"):
        with pytest.raises(sqlite3.IntegrityError, match="deleted only by retention|never deleted"):
            led.db.conn.execute(f"DELETE FROM {table}")
        assert count(led, table) >= 1


def test_a_live_session_is_kept_past_its_login_day(env):
    led, key, clock, _ = env
    mac, ip = "02:00:00:00:00:aa", "10.77.0.99"
    record_login(led, Login("line", "Ulong", "long", None, None, "2026-11", mac, ip, clock.ms + 30 * DAY_MS))
    acknowledge(led, seal(led, key)["id"])
    clock.ms += 100 * DAY_MS          # login 100 days ago, but its session ended 70 days ago
    assert prune(led, 90).deleted == {}
    clock.ms += 21 * DAY_MS
    record_login(led, Login("line", "Unew", "new", None, None, "2026-11", mac, ip, clock.ms + DAY_MS))
    assert prune(led, 90).deleted == {"logins": 1}


def test_disk_alert_is_recorded(env):
    led, key, clock, tmp = env
    state = disk_check(led, tmp, 1)
    assert state["alert"]
    assert led.db.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'disk_alert'").fetchone()[0] == 1
    assert not disk_check(led, tmp, 100)["alert"]
