"""The centre's ClickHouse store on real chDB (and on a ClickHouse server when
SKILLSPOT_CLICKHOUSE_URL names one): the same DDL and queries on both."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
import json
import os
import uuid

import pytest

from syncapi import batch as sbatch

chdb = pytest.importorskip("chdb")

from central.appdb import AppDB  # noqa: E402
from central.store import Store, open_store  # noqa: E402

BKK = dt.timezone(dt.timedelta(hours=7))
SERVER_URL = os.environ.get("SKILLSPOT_CLICKHOUSE_URL", "")
DAY = 86_400_000


@pytest.fixture(scope="module", params=["chdb", "server"])
def store(request, tmp_path_factory):
    if request.param == "server":
        if not SERVER_URL:
            pytest.skip("ClickHouse server contract test skipped: set SKILLSPOT_CLICKHOUSE_URL=http://host:8123 to run "
                        "the same store tests against a server")
        s = open_store(SERVER_URL, database=f"skillspot_test_{uuid.uuid4().hex[:8]}")
    else:
        s = open_store("", tmp_path_factory.mktemp("chdb") / "chdb")
    yield s
    if request.param == "server":
        s.backend.command(f"DROP DATABASE IF EXISTS {s.db}")
    s.close()


def ms(y, mo, d, h, mi, s=0, tz=BKK) -> int:
    return int(dt.datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp() * 1000)


def ip(text: str) -> int:
    a, b, c, d = map(int, text.split("."))
    return a << 24 | b << 16 | c << 8 | d


FLOW_COLS = ["id", "idx", "start_ms", "end_ms", "proto", "src_ip", "src_port", "pub_ip", "pub_port", "dst_ip", "dst_port",
             "bytes_orig", "bytes_reply", "flags"]
LOGIN_COLS = ["id", "at_ms", "box_id", "method", "line_user_id", "display_name", "friend", "friendship_changed",
              "consent_version", "mac", "ip", "expires_ms"]


def payload(box: str, seq: int, prev: str, tables: dict) -> tuple[dict, str]:
    raw, h, wire = sbatch.build(box, seq, prev, 0, tables)
    return sbatch.parse(wire)[0], h


def put(store: Store, box: str, seq: int, tables: dict, prev: str = sbatch.GENESIS) -> str:
    p, h = payload(box, seq, prev, tables)
    store.ingest(box, seq, h, p, received_ms=ms(2026, 9, 21, 12, 0))
    return h


def test_attribution_in_bangkok_time_every_candidate(store):
    box_a, box_b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    t = ms(2026, 9, 21, 10, 3)  # 10:03 in Bangkok = 03:03 UTC
    pub = "198.51.100.7"
    for box, user, src in ((box_a, "Ualice", "10.99.0.50"), (box_b, "Ubob", "10.88.0.60")):
        put(store, box, 1, {
            "logins": {"from": 0, "to": 1, "columns": LOGIN_COLS,
                       "rows": [[1, t - 600_000, box, "line", user, f"ชื่อ {user}", 1, 0, "v1", "02:00:00:00:00:01", src,
                                 t + 3600_000]]},
            "flow_segments": {"from": 0, "to": 1, "columns": FLOW_COLS,
                              "rows": [[1, 0, t - 1000, t + 1000, 6, ip(src), 41000, ip(pub), 41000, ip("1.1.1.1"), 443, 1, 2, 0],
                                       [1, 1, t + 7 * 3600_000, t + 7 * 3600_000 + 5, 6, ip(src), 41000, ip(pub), 41000,
                                        ip("1.1.1.1"), 443, 1, 2, 0]]}})
    got = store.attribute(pub, 41000, t, 2000)
    assert {(g["box_id"], g["line_user_id"]) for g in got} >= {(box_a, "Ualice"), (box_b, "Ubob")}
    assert all(g["start_ms"] <= t + 2000 and g["end_ms"] >= t - 2000 for g in got)
    # The same wall-clock time read as UTC (the timezone trap) is 7 hours later: the other flow.
    trap = ms(2026, 9, 21, 10, 3, tz=dt.timezone.utc)
    assert [g["start_ms"] for g in store.attribute(pub, 41000, trap, 2000) if g["box_id"] == box_a] == [t + 7 * 3600_000]
    assert store.attribute(pub, 41001, t, 2000) == []
    with pytest.raises(ValueError):
        store.attribute("not-an-ip", 1, t, 0)
    # Partitions are Bangkok days: the flow ending 10:03 Bangkok is in 20260921.
    assert "20260921" in store.partitions()["flows"]


def test_duplicate_batch_is_stored_once(store):
    box = f"d-{uuid.uuid4().hex[:6]}"
    t = ms(2026, 9, 22, 9, 0)
    tables = {"flow_segments": {"from": 0, "to": 3, "columns": FLOW_COLS,
                                "rows": [[s, i, t + i, t + i + 10, 17, ip("10.0.0.1"), 5000 + i, ip("198.51.100.9"),
                                          5000 + i, ip("8.8.8.8"), 53, 1, 1, 0] for s in (1, 2, 3) for i in range(100)]},
              "events": {"from": 0, "to": 2, "columns": ["id", "at_ms", "kind", "subject", "detail"],
                         "rows": [[1, t, "x", None, "{}"], [2, t, "y", "s", "{\"a\":1}"]]}}
    for _ in range(3):
        put(store, box, 1, tables)
    assert store.count_rows("flows", box) == (300, 300)
    assert store.count_rows("box_rows", box) == (2, 2)
    keys = store.row_keys(box)
    assert len(keys["flow_segments"]) == 300 and sorted(keys["events"]) == [1, 2]


def test_sessions_for_user_across_boxes_by_id_or_name(store):
    t = ms(2026, 9, 23, 14, 0)
    boxes = [f"s{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    for i, box in enumerate(boxes):
        put(store, box, 1, {
            "logins": {"from": 0, "to": 2, "columns": LOGIN_COLS,
                       "rows": [[1, t + i, box, "line", "Ucarol", "แคโรล Smith", None, None, None, "02:00:00:00:00:0a",
                                 "10.1.0.5", t + 3600_000],
                                [2, t + 10, box, "line", "Udave", "Dave", None, None, None, "02:00:00:00:00:0b",
                                 "10.1.0.6", t + 3600_000]]},
            "logouts": {"from": 0, "to": 1, "columns": ["id", "at_ms", "login_id", "mac", "reason"],
                        "rows": [[1, t + 60_000, 1, "02:00:00:00:00:0a", "revoked"]]}})
    by_id = store.sessions_for_user("Ucarol", t - DAY, t + DAY)
    assert [s["box_id"] for s in by_id] == boxes
    assert all(s["logout_ms"] == t + 60_000 and s["end_ms"] == t + 60_000 and s["logout_reason"] == "revoked" for s in by_id)
    assert [s["box_id"] for s in store.sessions_for_user("smith", t - DAY, t + DAY)] == boxes
    assert [s["line_user_id"] for s in store.sessions_for_user("แคโรล", t - DAY, t + DAY)] == ["Ucarol", "Ucarol"]
    assert store.sessions_for_user("Ucarol", t + 2 * DAY, t + 3 * DAY) == []
    with pytest.raises(ValueError):
        store.sessions_for_user("  ", t, t)


def test_export_rows_match_the_box_ledger_export(store, tmp_path):
    """The same rows exported by the box (`ledger export`) and by the centre are the same."""
    import time
    from ledger.db import open_ledger
    from ledger.export import FLOW_FIELDS, SESSION_FIELDS, export
    from ledger.seal import load_or_create_key
    from ledger import sync as lsync
    from tests.sync_util import Clock, fill
    clock = Clock(1_790_000_000.0)
    box = f"x-{uuid.uuid4().hex[:6]}"
    led = open_ledger(tmp_path / "l.sqlite", box, clock=clock)
    start = led.now_ms()
    fill(led, clock, n_users=4, flows_per_user=30)
    end = led.now_ms()
    prev, seq = sbatch.GENESIS, 0
    while (b := lsync.form_batch(led, 50)) is not None:
        p, h = sbatch.parse(b.body)
        store.ingest(box, b.seq, h, p, received_ms=int(time.time() * 1000))
    mine = store.export_rows(box, start, end)
    export(led, load_or_create_key(tmp_path), tmp_path / "exp", start, end, "tester", "")
    theirs = {name: [json.loads(l) for l in (tmp_path / "exp" / f"{name}.jsonl").read_text().splitlines()]
              for name in ("sessions", "flows")}
    assert [list(r) for r in mine["sessions"]][:1] == [list(SESSION_FIELDS)]
    assert [list(r) for r in mine["flows"]][:1] == [list(FLOW_FIELDS)]
    assert len(mine["flows"]) == len(theirs["flows"]) == 120
    assert mine["sessions"] == theirs["sessions"]
    key = lambda r: (r["start"], r["src_ip"], r["src_port"])  # noqa: E731
    assert sorted(mine["flows"], key=key) == sorted(theirs["flows"], key=key)


def test_retention_drops_whole_days_and_keeps_held_ones(store, tmp_path):
    from central import cases, retention
    appdb = AppDB(tmp_path / "c.sqlite")
    box = f"r-{uuid.uuid4().hex[:6]}"
    now = ms(2027, 3, 1, 12, 0)
    days = {}
    for n, (d_back) in enumerate((200, 150, 120, 95, 89, 10), start=1):
        t = now - d_back * DAY
        days[d_back] = dt.datetime.fromtimestamp(t / 1000, BKK).strftime("%Y%m%d")
        put(store, box, n, {"flow_segments": {"from": n - 1, "to": n, "columns": FLOW_COLS, "rows": [
            [n, 0, t, t + 1000, 6, ip("10.0.0.9"), 7000, ip("198.51.100.77"), 7000, ip("8.8.4.4"), 443, 1, 1, 0]]}})
    case = cases.open_case(appdb.connect(), "ตร.123/2569", "Royal Thai Police", "", "inv", now)
    t150 = now - 150 * DAY
    cases.add_range(appdb.connect(), case.id, box, t150 - 3600_000, t150 + 3600_000, now + 100 * DAY, False, "inv", now)
    t120 = now - 120 * DAY
    cases.add_range(appdb.connect(), case.id, None, t120, t120 + 1000, now - DAY, True, "inv", now)
    dry = retention.run(store, appdb, now, 90, dry_run=True)
    assert days[200] in dry["dropped"]["flows"] and days[95] in dry["dropped"]["flows"]
    assert store.count_rows("flows", box)[0] == 6
    res = retention.run(store, appdb, now, 90)
    parts = store.partitions()["flows"]
    assert days[200] not in parts and days[95] not in parts
    assert {days[150], days[120], days[89], days[10]} <= set(parts)
    assert set(res["kept_for_holds"]["flows"]) == {days[150], days[120]}
    assert sorted(store.row_keys(box)["flow_segments"]) == [[2, 0], [3, 0], [5, 0], [6, 0]]
    with pytest.raises(ValueError, match="legal floor"):
        retention.run(store, appdb, now, 60)


def test_central_config_errors_name_key_and_fix(tmp_path):
    from central.config import CentralConfigError, load, parse
    with pytest.raises(CentralConfigError) as ei:
        parse({"data_dir": str(tmp_path), "store": {"url": "clickhouse.local"}, "retention": {"days": 30},
               "server": {"treads": 4}})
    msg = str(ei.value)
    assert "[store.url]" in msg and "http://" in msg
    assert "[retention.days]" in msg and "90" in msg
    assert "[server.treads] is not a known key" in msg
    with pytest.raises(CentralConfigError, match="data_dir.*missing"):
        parse({})
    p = tmp_path / "c.toml"
    p.write_text("data_dir = ")
    with pytest.raises(CentralConfigError, match="not valid TOML"):
        load(p)
    assert load(Path(__file__).parent.parent / "examples" / "central.toml").server.threads == 8
