"""Flow storage: segments, compaction, attribution across staging, segments and long flows."""
from __future__ import annotations

import pytest

from ledger.db import open_ledger
from ledger.flows import (FLAG_OPEN, LONG_FLOW_MS, FlowEvent, compact, flows_at, flows_between, ip_int, stage)
from ledger.query import sessions, who
from ledger.records import Login, LeaseEvent, record_lease, record_login, record_logout
from ledger.seal import load_or_create_key, seal
from ledger.segments import Flow, Segment, encode
from ledger_clock_util import Clock

T0 = 1_790_000_000_000
PUB = ip_int("203.0.113.1")


@pytest.fixture
def led(tmp_path):
    clock = Clock(T0)
    ledger = open_ledger(tmp_path / "ledger.sqlite", "skl-box", clock)
    ledger.test_clock = clock
    ledger.test_key = load_or_create_key(tmp_path)
    yield ledger
    ledger.close()


def ev(i: int, start: int, end: int | None, src="10.77.0.2", sport=None, pport=None, ct=None) -> FlowEvent:
    return FlowEvent(ct if ct is not None else i, 0 if end is not None else 1, start, end, 6, ip_int(src),
                     sport or 40000 + i, PUB, pport or 30000 + i, ip_int("203.0.113.2"), 443, 100 * i, 1000 * i)


def test_segment_round_trip_and_lookup():
    flows = [Flow(T0 + i, T0 + i + 500, 17 if i % 2 else 6, ip_int("10.77.0.9") + i % 7, 1024 + i,
                  PUB, 30000 + (i * 37) % 1000, ip_int("198.51.100.7"), 53, i, 2 ** 40 + i) for i in range(3000)]
    blob, _ = encode(flows)
    seg = Segment(blob)
    assert sorted(seg.flows(), key=lambda f: (f.start_ms, f.pub_port)) == sorted(flows, key=lambda f: (f.start_ms, f.pub_port))
    target = flows[1234]
    assert target in seg.by_public(PUB, target.pub_port, target.start_ms + 10)
    assert seg.by_public(PUB, target.pub_port, target.end_ms + 10_000) == []
    with pytest.raises(ValueError):
        encode([])


def test_compaction_keeps_every_flow_and_lookup_sees_all_stores(led):
    long_start = T0 - LONG_FLOW_MS - 60_000
    events = [ev(i, T0 + i * 10, T0 + i * 10 + 2000) for i in range(1, 200)]
    events.append(ev(500, long_start, T0 + 5000))                # a long flow
    events.append(ev(600, T0 + 100, None, pport=30600))           # still open
    stage(led, events, led.test_key)
    before = {f.pub_port for f in flows_between(led, T0 - 10 ** 9, T0 + 10 ** 9)}
    assert len(before) == 200  # finished flows from staging, open one excluded
    # open flow found while only staged
    hit = flows_at(led, PUB, 30600, T0 + 1000)
    assert hit and hit[0].flags & FLAG_OPEN
    led.test_clock.ms = T0 + 3_600_000
    counts = compact(led)
    assert counts == {"flows": 200, "segments": 1, "long": 1}
    assert led.db.conn.execute("SELECT COUNT(*) FROM flow_staging").fetchone()[0] == 1  # the open NEW row stays
    after = {f.pub_port for f in flows_between(led, T0 - 10 ** 9, T0 + 10 ** 9)}
    assert after == before
    f = flows_at(led, PUB, 30042, T0 + 420 + 1000)
    assert [x.src_port for x in f] == [40042]
    assert flows_at(led, PUB, 30042, T0 + 420 + 10_000, slack_ms=0) == []
    assert [x.src_port for x in flows_at(led, PUB, 30500, long_start + 1000)] == [40500]
    # the DESTROY of the open flow arrives: the NEW row is dropped at the next compaction
    stage(led, [ev(600, T0 + 100, T0 + 4_000_000, pport=30600)], led.test_key)
    led.test_clock.ms = T0 + 9_000_000
    compact(led)
    assert led.db.conn.execute("SELECT COUNT(*) FROM flow_staging").fetchone()[0] == 0
    assert [x.flags for x in flows_at(led, PUB, 30600, T0 + 1000)] == [0]


def test_compact_waits_for_a_worthwhile_segment(led):
    stage(led, [ev(1, T0, T0 + 10)])
    assert compact(led)["flows"] == 0
    assert compact(led, force=True)["flows"] == 1


def test_who_names_the_person_device_and_session(led):
    mac = "36:a6:a2:17:a9:b6"
    record_lease(led, LeaseEvent("add", mac, "10.77.0.2", "phone", T0 + 3_600_000))
    led.test_clock.ms = T0 + 1000
    login_id = record_login(led, Login("line", "U1234567890abcdef", "สมชาย ใจดี", True, False, "2026-11", mac,
                                       "10.77.0.2", T0 + 4 * 3_600_000))
    stage(led, [ev(7, T0 + 60_000, T0 + 65_000)], led.test_key)
    ans = who(led, "203.0.113.1", 30007, T0 + 62_000)
    assert len(ans) == 1
    s = ans[0]["session"]
    assert (s["login_id"], s["line_user_id"], s["mac"], s["display_name"]) == (login_id, "U1234567890abcdef", mac, "สมชาย ใจดี")
    assert s["lease_start_ms"] == T0
    assert ans[0]["flow"]["src_port"] == 40007 and ans[0]["clock"] == "unknown"
    # after logout the address no longer maps to that person
    led.test_clock.ms = T0 + 120_000
    record_logout(led, mac, "revoked")
    stage(led, [ev(8, T0 + 130_000, T0 + 131_000)], led.test_key)
    assert who(led, "203.0.113.1", 30008, T0 + 130_500)[0]["session"] is None
    assert who(led, "203.0.113.1", 30999, T0 + 130_500) == []
    with pytest.raises(ValueError):
        who(led, "not-an-ip", 30007, T0)
    with pytest.raises(ValueError):
        who(led, "203.0.113.1", 0, T0)
    by_mac = sessions(led, T0, T0 + 10 ** 7, mac=mac.upper())
    assert [x["login_id"] for x in by_mac] == [login_id] and by_mac[0]["logout_reason"] == "revoked"
    assert sessions(led, T0, T0 + 10 ** 7, line_user_id="Uother") == []


def test_staged_flows_are_readable_only_once_sealed(led):
    stage(led, [ev(9, T0, T0 + 500), ev(10, T0, None, pport=30010)])
    # Not yet under the chain: who must not read them.
    assert flows_at(led, PUB, 30009, T0 + 100) == [] and flows_at(led, PUB, 30010, T0 + 100) == []
    assert list(flows_between(led, T0 - 1000, T0 + 1000)) == []
    seal(led, led.test_key)
    assert [f.src_port for f in flows_at(led, PUB, 30009, T0 + 100)] == [40009]
    assert flows_at(led, PUB, 30010, T0 + 100)[0].flags & FLAG_OPEN
    # Staged with the key: sealed in the same transaction, readable at once.
    stage(led, [ev(11, T0, T0 + 500)], led.test_key)
    assert [f.src_port for f in flows_at(led, PUB, 30011, T0 + 100)] == [40011]
