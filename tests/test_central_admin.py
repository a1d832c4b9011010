"""Central admin: accounts with TOTP and slowed failures, the append-only audit log, cases and
their retention, the signed export in the box's format. Real SQLite (the centre's AppDB with its
migrations); no mocks."""
from __future__ import annotations

import sqlite3

import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, audit, cases
from central.admin import export as cexport
from central.admin.timefmt import bangkok, parse, utc
from central.appdb import AppDB

T0 = 1_790_000_000_000  # 2026-09-21 (a fixed clock: TOTP codes are computed for it)
DAY = 86_400_000
PW = "correct horse battery"


@pytest.fixture
def conn(tmp_path):
    db = AppDB(tmp_path / "central.sqlite")
    yield db.connect()
    db.close()


def code_at(secret: str, ms: int) -> str:
    return pyotp.TOTP(secret).at(ms // 1000)


# ---------------------------------------------------------------- accounts

def test_login_needs_password_and_current_totp_and_a_code_works_once(conn):
    new = accounts.create(conn, "somchai", "investigator", PW, "cli", T0)
    assert new.totp_uri.startswith("otpauth://totp/") and "somchai" in new.totp_uri
    ok = accounts.authenticate(conn, "somchai", PW, code_at(new.totp_secret, T0), "10.0.0.1", T0)
    assert ok is not None and ok.role == "investigator" and ok.can("viewer") and not ok.can("admin")
    # The same code again (a shoulder-surfed or replayed code) is refused.
    assert accounts.authenticate(conn, "somchai", PW, code_at(new.totp_secret, T0), "10.0.0.1", T0 + 1000) is None
    # Wrong password with the right next code, right password with a stale code: refused.
    assert accounts.authenticate(conn, "somchai", "wrong password!", code_at(new.totp_secret, T0 + 30_000),
                                 "10.0.0.1", T0 + 30_000) is None
    assert accounts.authenticate(conn, "somchai", PW, code_at(new.totp_secret, T0 - 300_000), "10.0.0.1",
                                 T0 + 30_000) is None
    assert accounts.authenticate(conn, "somchai", PW, code_at(new.totp_secret, T0 + 30_000), "10.0.0.1",
                                 T0 + 30_000) is not None
    # A disabled account cannot log in even with everything right.
    accounts.create(conn, "root", "admin", PW, "cli", T0)
    accounts.set_disabled(conn, ok.id, True)
    assert accounts.authenticate(conn, "somchai", PW, code_at(new.totp_secret, T0 + 60_000), "10.0.0.1",
                                 T0 + 60_000) is None


def test_bad_account_input_is_refused_with_a_reason(conn):
    with pytest.raises(accounts.AccountError, match="12 characters"):
        accounts.create(conn, "short", "admin", "short", "cli", T0)
    with pytest.raises(accounts.AccountError, match="unknown role"):
        accounts.create(conn, "someone", "superuser", PW, "cli", T0)
    with pytest.raises(accounts.AccountError, match="no spaces"):
        accounts.create(conn, "two words", "viewer", PW, "cli", T0)
    only = accounts.create(conn, "root", "admin", PW, "cli", T0).account
    with pytest.raises(accounts.AccountError, match="exists already"):
        accounts.create(conn, "ROOT", "viewer", PW, "cli", T0)
    with pytest.raises(accounts.AccountError, match="last admin"):
        accounts.set_role(conn, only.id, "viewer")
    with pytest.raises(accounts.AccountError, match="last admin"):
        accounts.set_disabled(conn, only.id, True)
    assert accounts.by_name(conn, "root").role == "admin"


def test_repeated_failures_are_slowed_per_name_and_per_address(conn):
    new = accounts.create(conn, "somchai", "admin", PW, "cli", T0)
    t = T0
    for _ in range(accounts.FREE_FAILURES):
        assert accounts.wait_seconds(conn, "somchai", "10.0.0.9", t) == 0
        assert accounts.authenticate(conn, "somchai", "guess guess guess", "000000", "10.0.0.9", t) is None
        t += 100
    assert accounts.wait_seconds(conn, "somchai", "10.0.0.9", t) == 0
    accounts.authenticate(conn, "somchai", "guess guess guess", "000000", "10.0.0.9", t)
    waits = [accounts.wait_seconds(conn, "somchai", "10.0.0.9", t)]
    for _ in range(4):  # each further failure doubles the wait
        t += waits[-1] * 1000
        accounts.authenticate(conn, "somchai", "guess guess guess", "000000", "10.0.0.9", t)
        waits.append(accounts.wait_seconds(conn, "somchai", "10.0.0.9", t))
    assert waits == [1, 2, 4, 8, 16]
    # Another address is slowed too for this name (guessing from many addresses does not help) ...
    assert accounts.wait_seconds(conn, "somchai", "10.0.0.10", t) == 16
    # ... and this address for another name.
    assert accounts.wait_seconds(conn, "nobody", "10.0.0.9", t) == 16
    assert accounts.wait_seconds(conn, "nobody", "10.0.0.10", t) == 0
    # After the wait, the right login works and clears the name's failures.
    t += 16_000
    assert accounts.authenticate(conn, "somchai", PW, code_at(new.totp_secret, t), "10.0.0.10", t) is not None
    assert accounts.wait_seconds(conn, "somchai", "10.0.0.10", t) == 0


def test_sessions_expire_when_idle_and_end_when_the_account_changes(conn):
    acc = accounts.create(conn, "root", "admin", PW, "cli", T0).account
    other = accounts.create(conn, "nok", "viewer", PW, "cli", T0).account
    tok = accounts.start_session(conn, other, "10.0.0.1", T0)
    assert accounts.session_account(conn, tok, T0 + 1000, 60_000, 3_600_000).name == "nok"
    assert accounts.session_account(conn, tok, T0 + 1000 + 61_000, 60_000, 3_600_000) is None  # idle too long
    tok = accounts.start_session(conn, other, "10.0.0.1", T0)
    accounts.set_role(conn, other.id, "investigator")  # a role change ends its sessions
    assert accounts.session_account(conn, tok, T0 + 1000, 60_000, 3_600_000) is None
    tok = accounts.start_session(conn, acc, "10.0.0.1", T0)
    stored = conn.execute("SELECT token_hash FROM admin_sessions").fetchall()
    assert all(tok not in r[0] for r in stored)  # only a hash of the token is kept
    accounts.end_session(conn, tok)
    assert accounts.session_account(conn, tok, T0 + 1000, 60_000, 3_600_000) is None


# ---------------------------------------------------------------- audit

def test_audit_log_is_append_only_and_its_chain_shows_tampering(conn):
    for i in range(3):
        audit.record(conn, T0 + i, "somchai", "investigator", "search_attribution", {"ip": "203.0.113.7", "i": i},
                     i, "สภ.เมือง 123/2569", "10.0.0.1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET result_count = 0 WHERE id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    assert [e.result_count for e in audit.entries(conn)] == [2, 1, 0]
    assert audit.entries(conn, case_ref="สภ.เมือง 123/2569")[0].query == {"ip": "203.0.113.7", "i": 2}
    assert audit.verify(conn) == []
    # Someone with the file drops the triggers and edits a row: the chain says so.
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("UPDATE audit_log SET result_count = 0 WHERE id = 2")
    conn.execute("DELETE FROM audit_log WHERE id = 3")
    conn.execute("DELETE FROM audit_log WHERE id = 1")
    problems = audit.verify(conn)
    assert any("row 2: content changed" in p for p in problems), problems
    assert any("rows 1..1 are missing" in p for p in problems), problems


# ---------------------------------------------------------------- cases

def test_cases_extend_retention_at_most_two_years_and_holds_keep_until_released(conn):
    with pytest.raises(cases.CaseError, match="reference"):
        cases.open_case(conn, "  ", "สภ.เมืองเชียงใหม่", "", "somchai", T0)
    c = cases.open_case(conn, "ตช 0026.123/2569", "สภ.เมืองเชียงใหม่", "letter of 2026-09-20", "somchai", T0)
    with pytest.raises(cases.CaseError, match="exists already"):
        cases.open_case(conn, "ตช 0026.123/2569", "x", "", "somchai", T0)
    assert cases.require_open(conn, " ตช 0026.123/2569 ").id == c.id
    with pytest.raises(cases.CaseError, match="open the case first"):
        cases.require_open(conn, "unknown/1")
    with pytest.raises(cases.CaseError, match="required"):
        cases.require_open(conn, "")
    start, end = T0 - 10 * DAY, T0 - 9 * DAY
    with pytest.raises(cases.CaseError, match="at most 2 years"):
        cases.add_range(conn, c.id, "box-a", start, end, end + 731 * DAY, False, "somchai", T0)
    kept = cases.add_range(conn, c.id, "box-a", start, end, end + 730 * DAY, False, "somchai", T0)
    held = cases.add_range(conn, c.id, None, start, end, end, True, "somchai", T0)
    assert cases.held_ranges(conn, T0) == [cases.HeldRange("box-a", start, end, end + 730 * DAY),
                                           cases.HeldRange(None, start, end, None)]
    # Past the extension only the hold remains; after release, nothing.
    assert cases.held_ranges(conn, end + 731 * DAY) == [cases.HeldRange(None, start, end, None)]
    cases.release_hold(conn, held.id, "somchai", T0 + DAY)
    assert cases.held_ranges(conn, end + 731 * DAY) == []
    assert [h.box_id for h in cases.held_ranges(conn, T0)] == [kept.box_id]
    cases.close_case(conn, c.id, T0 + DAY)
    with pytest.raises(cases.CaseError, match="closed"):
        cases.require_open(conn, "ตช 0026.123/2569")


def test_the_appdb_retention_hook_sees_the_cases_holds(tmp_path):
    db = AppDB(tmp_path / "c.sqlite")
    c = cases.open_case(db.connect(), "REF-1", "court", "", "nok", T0)
    cases.add_range(db.connect(), c.id, "box-a", T0 - DAY, T0, T0, True, "nok", T0)
    assert [(h.box_id, h.until_ms) for h in db.held_ranges(T0 + 999 * DAY)] == [("box-a", None)]


# ---------------------------------------------------------------- times and export format

def test_times_are_read_in_the_stated_zone_and_shown_in_bangkok_and_utc():
    assert parse("2026-09-21 17:03:00", "Asia/Bangkok") == parse("2026-09-21T10:03:00Z", "Asia/Bangkok")
    assert parse("2026-09-21 10:03:00", "UTC") == parse("2026-09-21 17:03:00+07:00", "UTC")
    ms = parse("2026-09-21 10:03:00.250", "UTC")
    assert bangkok(ms) == "2026-09-21 17:03:00.250" and utc(ms) == "2026-09-21 10:03:00.250Z"
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse("21/09/2026 10:03", "UTC")
    with pytest.raises(ValueError, match="time zone"):
        parse("2026-09-21 10:03", "Europe/Paris")


def test_centre_export_has_the_box_format_and_the_box_verifier_accepts_it(tmp_path):
    from ledger import export as box_export  # the test may import both sides; central never does
    assert cexport.SESSION_FIELDS == box_export.SESSION_FIELDS
    assert cexport.FLOW_FIELDS == box_export.FLOW_FIELDS
    key = cexport.load_or_create_key(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert cexport.key_id(key.public_key()) == cexport.key_id(cexport.load_or_create_key(tmp_path / "k.pem").public_key())
    rows = {"sessions": [{"box_id": "box-a", "login_id": "L1", "line_user_id": "U1", "display_name": "สมชาย",
                          "mac": "02:00:00:00:00:01", "ip": "10.9.0.10", "login_ms": T0, "logout_ms": T0 + 60_000,
                          "end_ms": T0 + 60_000, "duration_ms": 60_000, "method": "line"}],
            "flows": [{"box_id": "box-a", "start_ms": T0 + 5, "end_ms": T0 + 9, "proto": "tcp", "src_ip": "10.9.0.10",
                       "src_port": 40000, "pub_ip": "203.0.113.7", "pub_port": 61000, "dst_ip": "198.51.100.1",
                       "dst_port": 443, "bytes_orig": 10, "bytes_reply": 20, "login_id": "L1",
                       "mac": "02:00:00:00:00:01", "line_user_id": "U1"}]}
    out = tmp_path / "exp"
    m = cexport.write_export(out, key, rows, "box-a", "สำนักงาน", T0 - DAY, T0 + DAY, "somchai", T0, "REF-1",
                             {"seq": 4, "hash": "ab" * 32, "received_ms": T0})
    assert m["format"] == "skillspot-ledger-export-v1" and m["files"]["flows.csv"]["rows"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["flows.csv", "flows.jsonl", "manifest.json", "sessions.csv",
                                                     "sessions.jsonl"]
    assert box_export.verify_export(out, key.public_key()) == []
    text = (out / "sessions.csv").read_text(encoding="utf-8-sig")
    assert "สมชาย" in text and "2026-09-21T" in text and "สำนักงาน" in text
    # Another key, or a changed file: the box's verifier says so.
    assert box_export.verify_export(out, Ed25519PrivateKey.generate().public_key())
    (out / "flows.csv").write_text((out / "flows.csv").read_text(encoding="utf-8-sig").replace("443", "80"),
                                   encoding="utf-8-sig")
    assert any("flows.csv" in p for p in box_export.verify_export(out, key.public_key()))
    with pytest.raises(FileExistsError):  # exports never overwrite
        cexport.write_export(out, key, rows, "box-a", "", T0, T0, "somchai", T0, None, None)


def test_cli_creates_the_first_admin_and_checks_the_audit_chain(tmp_path):
    import click
    from click.testing import CliRunner

    from central.admin.cli import admin_group
    cfg = tmp_path / "central.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")

    @click.group()
    @click.pass_context
    def main(ctx):  # as `central` does it: ctx.obj is the config path
        ctx.obj = str(cfg)
    main.add_command(admin_group)
    run = CliRunner()
    res = run.invoke(main, ["admin", "create", "somchai", "--role", "admin", "--password-stdin"], input=PW + "\n")
    assert res.exit_code == 0, res.output
    secret = res.output.split("TOTP key: ")[1].split()[0]
    db = AppDB(tmp_path / "data" / "central.sqlite")
    import time
    now = int(time.time() * 1000)
    assert accounts.authenticate(db.connect(), "somchai", PW, code_at(secret, now), "cli", now).role == "admin"
    again = run.invoke(main, ["admin", "create", "somchai", "--password-stdin"], input=PW + "\n")
    assert again.exit_code == 1 and "exists already" in again.output
    weak = run.invoke(main, ["admin", "create", "nok", "--password-stdin"], input="short\n")
    assert weak.exit_code == 1 and "12 characters" in weak.output
    ok = run.invoke(main, ["admin", "audit-verify"])
    assert ok.exit_code == 0 and "intact: 1 entries" in ok.output
    key = run.invoke(main, ["admin", "export-key"])
    assert key.exit_code == 0 and "BEGIN PUBLIC KEY" in key.output
    db.connect().execute("DROP TRIGGER audit_log_no_update")
    db.connect().execute("UPDATE audit_log SET admin = 'x'")
    bad = run.invoke(main, ["admin", "audit-verify"])
    assert bad.exit_code == 1 and "content changed" in bad.output


def test_every_admin_page_string_has_a_thai_translation():
    from pathlib import Path

    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po
    root = Path(__file__).resolve().parent.parent
    ids = {m[2] if isinstance(m[2], str) else m[2][0] for m in extract_from_dir(str(root / "central"), method_map=[
        ("admin/**.py", "python"), ("templates/**.html", "jinja2")])}
    with (root / "central/translations/th/LC_MESSAGES/messages.po").open("rb") as fh:
        th = {m.id: m.string for m in read_po(fh) if m.id}
    missing = sorted(i for i in ids if not th.get(i))
    assert len(ids) > 100 and not missing, missing
    assert all(th.get(r) for r in accounts.ROLES)  # role names are translated where shown


def test_admin_address_behind_a_proxy_is_the_one_the_proxy_saw(tmp_path):
    from flask import Flask

    from central.admin.context import EXTENSION, AdminContext
    from central.admin.settings import AdminSettings
    from central.admin.views import client_ip
    app = Flask(__name__)
    for hops, want in ((0, "127.0.0.1"), (1, "192.0.2.7"), (2, "10.1.1.1")):
        app.extensions[EXTENSION] = AdminContext(connect=lambda: None, store=None,
                                                 settings=AdminSettings(proxy_hops=hops), key=None, data_dir=tmp_path)
        # One proxy: the last entry is what it saw (the first may be forged); two: the outer one wrote the first.
        with app.test_request_context("/", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                                      headers={"X-Forwarded-For": "10.1.1.1, 192.0.2.7"}):
            assert client_ip() == want
