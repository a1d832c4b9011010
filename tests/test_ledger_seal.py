"""Sealing and `verify`: every kind of tampering is detected and named."""
from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.db import LedgerError, open_ledger
from ledger.flows import FlowEvent, compact, ip_int, stage
from ledger.records import LeaseEvent, Login, log_event, record_lease, record_login
from ledger.seal import load_or_create_key, seal, sealed_tables, verify

T0 = 1_790_000_000_000


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        self.ms += 1
        return self.ms / 1000


@pytest.fixture
def setup(tmp_path):
    led = open_ledger(tmp_path / "ledger.sqlite", "skl-box", Clock(T0))
    key = load_or_create_key(tmp_path)
    for i in range(5):
        record_lease(led, LeaseEvent("add", f"02:00:00:00:00:0{i}", f"10.77.0.{10 + i}", None, T0 + 3_600_000))
        record_login(led, Login("line", f"U{i:032x}", f"user {i}", None, None, "2026-11", f"02:00:00:00:00:0{i}",
                                f"10.77.0.{10 + i}", T0 + 3_600_000))
    stage(led, [FlowEvent(i, 0, T0 + i, T0 + i + 100, 17, ip_int("10.77.0.10"), 5000 + i, ip_int("203.0.113.1"),
                          30000 + i, ip_int("203.0.113.2"), 53, 60, 120) for i in range(50)])
    compact(led, force=True)
    first = seal(led, key)
    log_event(led, "test", "second batch")
    second = seal(led, key)
    yield led, key, tmp_path / "ledger.sqlite", first, second
    led.close()


def tamper(path, *sql: str) -> None:
    """What an attacker with the file does: a separate connection, triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    for table in ("leases", "logins", "events", "flow_segments", "seals"):
        conn.execute(f"DROP TRIGGER IF EXISTS {table}_append_only")
        conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    for s in sql:
        conn.execute(s)
    conn.close()


def test_clean_ledger_verifies_and_key_file_is_private(setup, tmp_path):
    led, key, path, first, second = setup
    rep = verify(led, key.public_key())
    assert rep.ok, rep.problems
    assert rep.seals == 2 and rep.rows_checked > 10
    assert (tmp_path / "ledger_ed25519.pem").stat().st_mode & 0o777 == 0o600
    assert "flow_segments" in first["tables"] and "radius_acct" in sealed_tables(led.db.conn)
    assert load_or_create_key(tmp_path).public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    assert seal(led, key) is None  # nothing new


def test_changed_row_is_named(setup):
    led, key, path, *_ = setup
    tamper(path, "UPDATE logins SET line_user_id = 'Uforged' WHERE id = 3")
    rep = verify(led, key.public_key())
    assert rep.problems == ["logins id 3: content changed since seal 1"]


def test_deleted_row_is_named(setup):
    led, key, path, *_ = setup
    tamper(path, "DELETE FROM leases WHERE id = 2")
    assert verify(led, key.public_key()).problems == ["leases id 2: row deleted (sealed in seal 1, not removed by retention)"]


def test_reordered_rows_are_named(setup):
    led, key, path, *_ = setup
    tamper(path, "UPDATE leases SET id = 100 WHERE id = 1", "UPDATE leases SET id = 1 WHERE id = 2",
           "UPDATE leases SET id = 2 WHERE id = 100")
    problems = verify(led, key.public_key()).problems
    assert "leases id 1: holds the content sealed as id 2 (reordered), seal 1" in problems
    assert "leases id 2: holds the content sealed as id 1 (reordered), seal 1" in problems


def test_changed_flow_segment_is_named(setup):
    led, key, path, *_ = setup
    tamper(path, "UPDATE flow_segments SET data = CAST(data || x'00' AS BLOB) WHERE id = 1")
    assert verify(led, key.public_key()).problems == ["flow_segments id 1: content changed since seal 1"]


def test_inserted_row_in_sealed_range_is_named(setup):
    led, key, path, *_ = setup
    tamper(path, "DELETE FROM leases WHERE id = 4",
           "INSERT INTO leases (id, at_ms, box_id, event, mac, ip) VALUES (4, 1, 'x', 'add', 'm', '10.0.0.1')")
    assert verify(led, key.public_key()).problems == ["leases id 4: content changed since seal 1"]


def test_broken_chain_and_forged_seal_are_named(setup):
    led, key, path, *_ = setup
    tamper(path, "DELETE FROM seals WHERE id = 1")
    problems = verify(led, key.public_key()).problems
    assert any(p.startswith("seal 2: follows seal 0") for p in problems)
    assert any(p.startswith("seal 2: prev_hash does not match") for p in problems)


def test_resealed_by_another_key_fails(setup):
    led, key, path, *_ = setup
    other = Ed25519PrivateKey.generate()
    problems = verify(led, other.public_key()).problems
    assert problems and all("signature invalid" in p for p in problems)


def test_unsealed_rows_are_reported_not_failed(setup):
    led, key, path, *_ = setup
    log_event(led, "later", None)
    rep = verify(led, key.public_key())
    assert rep.ok and rep.unsealed == {"events": 1}


def test_a_table_added_later_joins_the_chain(setup):
    led, key, path, *_ = setup
    led.db.conn.execute("CREATE TABLE later_records (id INTEGER PRIMARY KEY, at_ms INTEGER, what TEXT)")
    led.db.conn.execute("INSERT INTO later_records (at_ms, what) VALUES (1, 'a')")
    s = seal(led, key)
    assert s["tables"]["later_records"] == {"from": 0, "to": 1, "rows": 1}
    tamper(path, "UPDATE later_records SET what = 'b'")
    assert verify(led, key.public_key()).problems == [f"later_records id 1: content changed since seal {s['id']}"]


def test_a_table_without_id_cannot_be_sealed_silently(setup):
    led, key, *_ = setup
    led.db.conn.execute("CREATE TABLE odd (x INTEGER)")
    with pytest.raises(LedgerError, match="no id column"):
        seal(led, key)


def test_cli_verify_exit_codes(setup, tmp_path):
    from skillspot.cli import main
    led, key, path, *_ = setup
    cfg = tmp_path / "s.toml"
    cfg.write_text(_config(tmp_path))
    runner = CliRunner()
    res = runner.invoke(main, ["-c", str(cfg), "ledger", "verify"])
    assert res.exit_code == 0 and res.output.startswith("OK: 2 seals"), res.output
    tamper(path, "UPDATE events SET subject = 'forged' WHERE kind = 'test'")
    res = runner.invoke(main, ["-c", str(cfg), "ledger", "verify"])
    assert res.exit_code == 1 and "TAMPERED: events id" in res.output


def _config(data_dir) -> str:
    from pathlib import Path
    text = (Path(__file__).parent.parent / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    return text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{data_dir}"').replace('id = "dsd-bkk-01"', 'id = "skl-box"')
