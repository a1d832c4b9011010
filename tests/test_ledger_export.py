"""Exports for officials: CSV with BOM and JSON Lines, signed manifest, audit trail, round trip."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.db import LedgerError, open_ledger
from ledger.export import export, iso, verify_export
from ledger.flows import FlowEvent, compact, ip_int, stage
from ledger.records import LeaseEvent, Login, record_lease, record_login
from ledger.seal import chain_head, load_or_create_key, verify
from ledger_clock_util import Clock

T0 = 1_790_000_000_000
NAME = "สมหญิง \"ทดสอบ\", ภาษาไทย"


@pytest.fixture
def env(tmp_path):
    clock = Clock(T0)
    led = open_ledger(tmp_path / "ledger.sqlite", "skl-box", clock)
    key = load_or_create_key(tmp_path)
    for n, (mac, ip, user) in enumerate([("02:00:00:00:00:01", "10.77.0.11", "Ua"),
                                         ("02:00:00:00:00:02", "10.77.0.12", "Ub")]):
        record_lease(led, LeaseEvent("add", mac, ip, None, T0 + 3_600_000))
        record_login(led, Login("line", user, NAME if n == 0 else "Bob", True, False, "2026-11", mac, ip,
                                T0 + 3_600_000))
        stage(led, [FlowEvent(i, 0, T0 + 1000 * i, T0 + 1000 * i + 500, 6, ip_int(ip), 40000 + i,
                              ip_int("203.0.113.1"), 30000 + 100 * n + i, ip_int("203.0.113.2"), 443, 10 * i, 20 * i)
                    for i in range(1, 31)])
    clock.ms += 7_200_000
    compact(led)
    yield led, key, clock, tmp_path
    led.close()


def read_csv(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "CSV must start with a UTF-8 BOM for Excel"
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_export_round_trip(env):
    led, key, clock, tmp = env
    out = tmp / "exp1"
    m = export(led, key, out, T0, T0 + 3_600_000, "admin somchai", "สำนักงานทดสอบ")
    assert verify_export(out, key.public_key()) == []
    assert m["chain_head"] == chain_head(led) or m["chain_head"]["seal_id"] == chain_head(led)["seal_id"] - 1
    flows_csv, flows_jl = read_csv(out / "flows.csv"), [json.loads(x) for x in (out / "flows.jsonl").open(encoding="utf-8")]
    assert len(flows_csv) == len(flows_jl) == 60 == m["files"]["flows.csv"]["rows"]
    # CSV and JSONL say the same thing, and both match what was recorded
    for c, j in zip(flows_csv, flows_jl):
        assert c == {k: str(v) for k, v in j.items()}
    pairs = {(r["src_ip"], int(r["src_port"]), int(r["pub_port"]), r["line_user_id"]) for r in flows_jl}
    expected = {(ip, 40000 + i, 30000 + 100 * n + i, user) for n, (ip, user) in enumerate([("10.77.0.11", "Ua"), ("10.77.0.12", "Ub")])
                for i in range(1, 31)}
    assert pairs == expected
    assert flows_jl[0]["start"] == iso(T0 + 1000) and flows_jl[0]["office"] == "สำนักงานทดสอบ"
    sess = read_csv(out / "sessions.csv")
    assert [s["display_name"] for s in sess] == [NAME, "Bob"]
    assert int(sess[0]["bytes_orig"]) == sum(10 * i for i in range(1, 31))
    # the export is in the audit trail, sealed, and the ledger still verifies
    ev = led.db.conn.execute("SELECT subject, detail FROM events WHERE kind = 'export'").fetchall()
    assert ev[0][0] == "admin somchai" and json.loads(ev[0][1])["files"]["flows.csv"]["sha256"] == m["files"]["flows.csv"]["sha256"]
    assert verify(led, key.public_key()).ok


def test_filtered_export_holds_only_that_user(env):
    led, key, clock, tmp = env
    export(led, key, tmp / "exp2", T0, T0 + 3_600_000, "admin", "office", line_user_id="Ub")
    rows = [json.loads(x) for x in (tmp / "exp2" / "flows.jsonl").open(encoding="utf-8")]
    assert len(rows) == 30 and {r["line_user_id"] for r in rows} == {"Ub"}
    export(led, key, tmp / "exp3", T0, T0 + 3_600_000, "admin", "office", mac="02:00:00:00:00:01")
    assert {json.loads(x)["src_ip"] for x in (tmp / "exp3" / "flows.jsonl").open(encoding="utf-8")} == {"10.77.0.11"}


def test_tampered_export_is_detected(env):
    led, key, clock, tmp = env
    out = tmp / "exp"
    export(led, key, out, T0, T0 + 3_600_000, "admin", "office")
    text = (out / "flows.csv").read_text(encoding="utf-8-sig").replace("10.77.0.11", "10.77.0.13", 1)
    (out / "flows.csv").write_text(text, encoding="utf-8-sig")
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    m["admin"] = "someone else"
    (out / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    problems = verify_export(out, key.public_key())
    assert "flows.csv: SHA-256 differs from the manifest (file changed)" in problems
    assert "manifest signature invalid (manifest changed or another key)" in problems


def test_bad_requests_lose_nothing(env):
    led, key, clock, tmp = env
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("x")
    with pytest.raises(LedgerError, match="not empty"):
        export(led, key, tmp / "full", T0, T0 + 1, "admin", "office")
    assert (tmp / "full" / "keep.txt").read_text() == "x"
    with pytest.raises(LedgerError, match="named admin"):
        export(led, key, tmp / "e1", T0, T0 + 1, " ", "office")
    with pytest.raises(LedgerError, match="ends before"):
        export(led, key, tmp / "e2", T0 + 1, T0, "admin", "office")
    assert led.db.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'export'").fetchone()[0] == 0


def test_cli_export_who_and_search_need_a_named_admin_and_are_logged(env):
    from skillspot.cli import main
    led, key, clock, tmp = env
    text = (Path(__file__).parent.parent / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    cfg = tmp / "s.toml"
    cfg.write_text(text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp}"')
                   .replace('id = "dsd-bkk-01"', 'id = "skl-box"'), encoding="utf-8")
    r = CliRunner()
    base = ["-c", str(cfg), "ledger"]
    assert r.invoke(main, [*base, "who", "--ip", "203.0.113.1", "--port", "30005", "--at", iso(T0 + 5200)]).exit_code == 2
    res = r.invoke(main, [*base, "who", "--ip", "203.0.113.1", "--port", "30005", "--at", iso(T0 + 5200),
                          "--admin", "somchai", "--json"])
    assert res.exit_code == 0, res.output
    answer = json.loads(res.output.splitlines()[0])
    assert answer["session"]["line_user_id"] == "Ua" and answer["flow"]["src_port"] == 40005
    res = r.invoke(main, [*base, "who", "--ip", "203.0.113.1", "--port", "30005", "--at", "2026-11-27 10:00",
                          "--admin", "somchai"])
    assert res.exit_code == 2 and "no time zone" in res.output
    res = r.invoke(main, [*base, "search", "--line-user", "Ub", "--from", str(T0), "--to", str(T0 + 10 ** 7),
                          "--admin", "somchai"])
    assert res.exit_code == 0 and json.loads(res.output)["mac"] == "02:00:00:00:00:02"
    out = tmp / "cli-exp"
    res = r.invoke(main, [*base, "export", "--from", iso(T0), "--to", "2099-01-01T00:00:00+07:00", "--out", str(out),
                          "--admin", "somchai"])
    assert res.exit_code == 0, res.output
    assert r.invoke(main, [*base, "verify-export", str(out)]).exit_code == 0
    kinds = [k for (k,) in led.db.conn.execute("SELECT kind FROM events WHERE subject = 'somchai' ORDER BY id")]
    assert kinds == ["query_who", "query_search", "export"]
