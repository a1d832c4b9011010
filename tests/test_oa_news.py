"""News by office or province as LINE narrowcasts to an uploaded audience of exactly the people
who agreed, driven through the LINE sandbox: the audience's life cycle (IN_PROGRESS → READY, more
than 10,000 people in several uploads), the retry key kept across a 429, the progress phases and
the delivery statistics read back, groups under LINE's 50-person minimum sent as multicasts, the
quota refusal with the numbers. Also the WiFi check-in asking the store once per pass.

The worker thread is stopped: each test moves the shared clock (centre and sandbox) and runs the
narrowcast steps itself, so every phase is seen."""
from __future__ import annotations

import json
import uuid

import pytest

pytest.importorskip("chdb")

from central.oa.service import AUDIENCE_UPLOAD_MAX, NARROWCAST_MIN, OaError  # noqa: E402
from lineapi import sandbox_oa  # noqa: E402
from lineapi.sandbox import SandboxUser  # noqa: E402
from tests.central_admin_util import Box, login_row  # noqa: E402
from tests.oa_util import bkk_ms, oa_centre  # noqa: E402

HOUR = 3_600_000


@pytest.fixture
def c(tmp_path, monkeypatch):
    with oa_centre(tmp_path, monkeypatch, bkk_ms(2026, 12, 1, 9, 0)) as centre:
        centre.ext.worker.stop()  # the test runs every step itself
        conn = centre.services.appdb.connect()
        conn.execute("INSERT INTO oa_offices VALUES ('Lampang', 'ลำปาง'), ('Chiang Mai', 'เชียงใหม่')")
        yield centre


def followers(c, n: int, office: str, agree: bool = True) -> list[str]:
    """`n` friends of the OA (in the sandbox and in the centre) who visit `office`."""
    conn = c.services.appdb.connect()
    users = ["U" + uuid.uuid4().hex for _ in range(n)]
    for i, u in enumerate(users):
        c.sb.state.put_user(SandboxUser(u, f"{office} {i}", None, is_friend=True))
    conn.executemany("INSERT INTO oa_friends (user_id, is_friend, office) VALUES (?, 1, ?)", [(u, office) for u in users])
    if agree:
        conn.executemany("INSERT INTO oa_consent (user_id, kind, granted, at_ms, source) VALUES (?, 'messages', 1, ?, 'chat')",
                         [(u, c.clock.ms) for u in users])
    return users


def narrowcast_row(c, bid: int) -> dict:
    conn = c.services.appdb.connect()
    cur = conn.execute("SELECT * FROM oa_narrowcasts WHERE broadcast_id = ?", (bid,))
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone()))


def step(c, ms: int) -> int:
    """Let `ms` pass on the shared clock, then one round of narrowcast work."""
    c.clock.ms += ms
    return c.oa.flush_narrowcasts()


def got_news(c, user: str, needle: str) -> bool:
    return any(needle in (m.get("text") or "") for m in sandbox_oa.sent_to(c.sb.state, user))


def test_news_by_province_is_a_narrowcast_to_the_people_who_agreed(c):
    oa, sb = c.oa, c.sb.state.oa
    lampang = followers(c, 60, "Lampang")
    silent = followers(c, 4, "Lampang", agree=False)  # friends who never agreed
    chiang_mai = followers(c, 5, "Chiang Mai")
    sb.quota_limit = sb.quota_used + 1000
    sb.narrowcast_step_s = 1.5  # LINE takes a while per phase: the centre sees it `sending` first
    p = oa.preview_broadcast(province="ลำปาง")
    assert p["recipients"] == 60 and p["fits"] and p["remaining"] == 1000  # shown before sending
    res = oa.send_broadcast("ข่าวอบรมช่างเชื่อม", "Welding course news", "", "ลำปาง", "staff")
    assert res["how"] == "narrowcast" and res["recipients"] == 60
    # someone stops after the send was queued: consent is checked again when the audience is built
    oa.set_consent(lampang[10], "messages", False, "chat")
    used_before = sb.quota_used

    assert step(c, 0) == 1
    [audience] = sb.audiences.values()
    assert sorted(audience["members"]) == sorted(set(lampang) - {lampang[10]})
    row = narrowcast_row(c, res["id"])
    assert row["step"] == "upload" and row["audience_id"] == audience["id"] and row["uploaded"] == 59
    assert step(c, 0) == 0  # nothing due until the next look at the audience
    c.sb.state.add_fault("narrowcast", "429")  # LINE's rate limit on the first attempt
    step(c, 2_000)  # READY now: sent, refused with 429
    row = narrowcast_row(c, res["id"])
    assert row["step"] == "send" and row["attempts"] == 1 and "429" in row["error"]
    assert sb.narrowcasts == {}
    step(c, 1_000)  # backed off 1 s, tried again with the same key
    row = narrowcast_row(c, res["id"])
    assert row["step"] == "track" and row["request_id"] in sb.narrowcasts
    assert sb.narrowcasts[row["request_id"]]["retry_key"] == row["retry_key"]
    assert not got_news(c, lampang[0], "ข่าวอบรมช่างเชื่อม")  # LINE is still working on it
    step(c, 2_000)
    assert narrowcast_row(c, res["id"])["phase"] == "sending"
    step(c, 2_000)
    row = narrowcast_row(c, res["id"])
    assert row["step"] == "done" and row["phase"] == "succeeded"
    assert (row["target_count"], row["success_count"], row["failure_count"], row["delivered"]) == (59, 59, 0, 59)
    assert sb.audiences == {}  # used once, then deleted
    assert sb.quota_used - used_before == 59
    assert all(got_news(c, u, "ข่าวอบรมช่างเชื่อม") for u in lampang if u != lampang[10])
    assert not any(got_news(c, u, "ข่าวอบรมช่างเชื่อม") for u in [lampang[10], *silent, *chiang_mai])
    [narrow] = [s for s in sb.sent if s["kind"] == "narrowcast"]
    assert not [s for s in sb.sent if s["kind"] == "broadcast"]  # never LINE's broadcast
    assert narrow["retry_key"] == row["retry_key"]
    hist = oa.broadcasts()[0]
    assert hist["id"] == res["id"] and hist["phase"] == "succeeded" and hist["delivered"] == 59


def test_everyone_who_agreed_is_an_audience_too_and_the_quota_refuses_with_numbers(c):
    oa, sb = c.oa, c.sb.state.oa
    agreed = followers(c, 30, "Lampang") + followers(c, 25, "Chiang Mai")
    followers(c, 3, "Lampang", agree=False)
    sb.quota_limit = sb.quota_used + 50
    p = oa.preview_broadcast()
    assert p["recipients"] == 55 and not p["fits"]
    with pytest.raises(OaError, match=r"55 recipients but only 50 of \d+ messages left this month \(\d+ used\)"):
        oa.send_broadcast("ข่าวทุกคน", "News for all", "", "", "staff")
    assert c.services.appdb.connect().execute("SELECT count(*) FROM oa_narrowcasts").fetchone()[0] == 0
    assert oa.broadcasts()[0]["status"] == "refused"
    sb.quota_limit = sb.quota_used + 100
    res = oa.send_broadcast("ข่าวทุกคน", "News for all", "", "", "staff")
    assert res["how"] == "narrowcast"
    step(c, 0)
    [audience] = sb.audiences.values()
    assert sorted(audience["members"]) == sorted(agreed)  # the three who did not agree are left out
    for _ in range(4):
        step(c, 2_000)
    assert narrowcast_row(c, res["id"])["phase"] == "succeeded"
    assert all(got_news(c, u, "ข่าวทุกคน") for u in agreed)


def test_small_groups_go_as_multicast(c):
    """LINE fails narrowcasts to audiences under 50 people (errorCode 4): smaller groups, also those
    that shrink below 50 before the audience is built, go as multicasts of known user ids."""
    oa, sb = c.oa, c.sb.state.oa
    small = followers(c, NARROWCAST_MIN - 1, "Chiang Mai")
    sb.quota_limit = sb.quota_used + 1000
    res = oa.send_broadcast("ข่าวเชียงใหม่", "Chiang Mai news", "Chiang Mai", "", "staff")
    assert res["how"] == "multicast"
    oa.flush_outbox()
    assert all(got_news(c, u, "ข่าวเชียงใหม่") for u in small)
    lampang = followers(c, NARROWCAST_MIN, "Lampang")
    res = oa.send_broadcast("ข่าวลำปาง", "Lampang news", "Lampang", "", "staff")
    assert res["how"] == "narrowcast"
    oa.set_consent(lampang[0], "messages", False, "chat")
    step(c, 0)
    row = narrowcast_row(c, res["id"])
    assert row["step"] == "multicast" and row["target_count"] == NARROWCAST_MIN - 1 and sb.audiences == {}
    oa.flush_outbox()
    assert all(got_news(c, u, "ข่าวลำปาง") for u in lampang[1:]) and not got_news(c, lampang[0], "ข่าวลำปาง")


def test_more_than_one_upload_for_a_large_audience(c):
    oa, sb = c.oa, c.sb.state.oa
    many = followers(c, AUDIENCE_UPLOAD_MAX + 120, "Lampang")
    sb.quota_limit = sb.quota_used + 20_000
    res = oa.send_broadcast("ข่าวใหญ่", "Big news", "", "ลำปาง", "staff")
    step(c, 0)
    [audience] = sb.audiences.values()
    assert len(audience["members"]) == AUDIENCE_UPLOAD_MAX  # one call takes at most 10,000
    step(c, 2_000)  # READY: the rest is added (a new upload job)
    assert len(audience["members"]) == len(many) and narrowcast_row(c, res["id"])["step"] == "upload"
    step(c, 2_000)  # READY again: sent
    assert narrowcast_row(c, res["id"])["step"] == "track"
    step(c, 2_000)
    row = narrowcast_row(c, res["id"])
    assert row["phase"] == "succeeded" and row["success_count"] == len(many)
    assert got_news(c, many[-1], "ข่าวใหญ่")


def test_audience_failure_is_recorded(c):
    """An audience LINE could not build (FAILED/EXPIRED) ends the send with the reason, kept for staff."""
    oa, sb = c.oa, c.sb.state.oa
    followers(c, 60, "Lampang")
    sb.quota_limit = sb.quota_used + 1000
    res = oa.send_broadcast("ข่าว", "News", "Lampang", "", "staff")
    step(c, 0)
    sb.audiences.clear()  # gone at LINE (deleted in the console): LINE answers 400 for it
    step(c, 2_000)
    row = narrowcast_row(c, res["id"])
    assert row["step"] == "failed" and "400" in row["error"]
    assert "400" in oa.broadcasts()[0]["send_error"]


def test_wifi_checkin_asks_the_store_once_per_pass(c):
    oa, store = c.oa, c.services.store
    box = Box("box-lpg-9", "Lampang")
    box.enrol(c)
    cid = oa.add_course("WELD-9", "Lampang", "ลำปาง", "งานเชื่อม", "Welding", "welding")
    start = c.clock.ms + HOUR
    sid = oa.add_session(cid, start, start + 6 * HOUR, capacity=10)
    trainees = followers(c, 5, "Lampang")
    conn = c.services.appdb.connect()
    for u in trainees:
        oa.register(u, sid)
        oa.set_consent(u, "auto_checkin", True, "chat")
    a, b, gone, elsewhere, absent = trainees
    early = login_row(box, start - 2 * HOUR, gone, "gone", "02:00:00:00:01:03", "10.1.0.23")
    box.upload(c, {"logins": [
        login_row(box, start + 10 * 60_000, a, "a", "02:00:00:00:01:01", "10.1.0.21"),
        login_row(box, start - 30 * 60_000, b, "b", "02:00:00:00:01:02", "10.1.0.22"),  # before class, still on
        early]})
    # `gone` logged out an hour before class: not there
    box.upload(c, {"logouts": [{"id": box.ids(1)[0], "at_ms": start - HOUR, "login_id": early["id"],
                                "mac": early["mac"], "reason": "user"}]})
    other = Box("box-cm-9", "Chiang Mai")
    other.enrol(c)
    other.upload(c, {"logins": [login_row(other, start + 5 * 60_000, elsewhere, "e", "02:00:00:00:01:04", "10.2.0.24")]})
    c.clock.ms = start + HOUR
    calls: list[str] = []
    real_q = store.q

    def counting_q(sql: str, params: dict | None = None) -> list[dict]:
        calls.append(sql)
        return real_q(sql, params)
    store.q = counting_q
    try:
        assert oa.wifi_checkins() == 2
    finally:
        del store.q
    assert len(calls) == 1  # one query for all five candidates
    sheet = {r["user_id"]: r for r in oa.attendance_sheet(sid)}
    assert sheet[a]["method"] == "wifi" and sheet[a]["checked_in_ms"] == start + 10 * 60_000
    assert sheet[b]["method"] == "wifi" and sheet[b]["checked_in_ms"] == start  # counted from the start
    assert all(sheet[u]["method"] is None for u in (gone, elsewhere, absent))
    assert oa.wifi_checkins() == 0
    assert json.loads(conn.execute("SELECT target FROM oa_outbox WHERE purpose = 'checkin' ORDER BY id LIMIT 1")
                      .fetchone()[0]) in (a, b)
