"""The OA webhook's front door and the outbox's manners: forged or unsigned bodies refused with
no trace, a duplicate or redelivered event handled once, nothing lost while no worker runs,
pushes retried with one retry key (409 = already accepted), 429 backing off, the quota refusing
a broadcast with the numbers, and the staff pages (login, roles, CSV import, attendance CSV,
charts)."""
from __future__ import annotations

import json

import pytest
import requests

pytest.importorskip("chdb")

from central import accounts  # noqa: E402
from central.oa.service import Oa, OaError  # noqa: E402
from lineapi import sandbox_oa  # noqa: E402
from lineapi.sandbox import default_users  # noqa: E402
from tests.central_admin_util import Box, login_row  # noqa: E402
from tests.oa_util import SECRET, bkk_ms, oa_centre, wait_for  # noqa: E402

SOMCHAI, MALEE, NIRAN = (u.user_id for u in default_users())


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp, \
            oa_centre(tmp_path_factory.mktemp("oa"), mp, bkk_ms(2026, 12, 1, 9, 0)) as centre:
        yield centre


def inbox_count(c) -> int:
    return c.services.appdb.connect().execute("SELECT count(*) FROM oa_inbox").fetchone()[0]


def body_of(events: list[dict]) -> bytes:
    return json.dumps({"destination": "U" + "1" * 32, "events": events}).encode()


def test_forged_unsigned_and_malformed_are_refused_without_trace(c):
    ev = {"type": "follow", "mode": "active", "timestamp": c.clock.ms, "source": {"type": "user", "userId": MALEE},
          "webhookEventId": "01J0000000000000000000FORG", "deliveryContext": {"isRedelivery": False},
          "replyToken": "x" * 32, "follow": {"isUnblocked": False}}
    body = body_of([ev])
    before = inbox_count(c)
    url = c.url + "/line/webhook"
    wrong = sandbox_oa.sign("ffffffffffffffffffffffffffffffff", body)
    assert requests.post(url, data=body, headers={"X-Line-Signature": wrong}, timeout=10).status_code == 401
    assert requests.post(url, data=body, timeout=10).status_code == 401
    # a signature made for another body (a tampered body) is refused too
    good_for_other = sandbox_oa.sign(SECRET, body_of([]))
    assert requests.post(url, data=body, headers={"X-Line-Signature": good_for_other}, timeout=10).status_code == 401
    bad = b"not json at all"
    assert requests.post(url, data=bad, headers={"X-Line-Signature": sandbox_oa.sign(SECRET, bad)},
                         timeout=10).status_code == 400
    assert inbox_count(c) == before
    assert not c.sent(MALEE)
    # the same body correctly signed is accepted; an empty events list (LINE's URL check) too
    assert requests.post(url, data=body, headers={"X-Line-Signature": sandbox_oa.sign(SECRET, body)},
                         timeout=10).status_code == 200
    empty = body_of([])
    assert requests.post(url, data=empty, headers={"X-Line-Signature": sandbox_oa.sign(SECRET, empty)},
                         timeout=10).json() == {"accepted": 0, "duplicates": 0}


def test_duplicate_and_redelivered_event_handled_once(c):
    n = len(c.sent(NIRAN))
    ev = c.act("follow", NIRAN)
    c.wait_text(NIRAN, "ข่าวสาร", after=n)
    # LINE may send the same event twice, and redelivers it with isRedelivery=true
    assert sandbox_oa.deliver(c.sb.state, [ev]) == 200
    assert sandbox_oa.redeliver(c.sb.state, ev) == 200
    c.settle()
    row = c.services.appdb.connect().execute("SELECT count(*), max(redelivered) FROM oa_inbox WHERE event_id = ?",
                                             (ev["webhookEventId"],)).fetchone()
    assert row == (1, 2)
    assert len([m for m in c.sent(NIRAN)[n:] if "ข่าวสาร" in (m.get("text") or "")]) == 1


def test_webhook_failure_is_redelivered_and_nothing_is_lost_without_a_worker(c):
    # the worker is stopped (a process that died after answering LINE): events wait in the inbox
    c.ext.worker.stop()
    try:
        n = len(c.sent(MALEE))
        c.act("message", MALEE, text="courses")
        assert inbox_count(c) and c.services.appdb.connect().execute(
            "SELECT count(*) FROM oa_inbox WHERE done_ms IS NULL").fetchone()[0] == 1
        # a fresh service over the same database (the restarted process) picks it up
        fresh = Oa(connect=c.services.appdb.connect, clock_ms=c.services.now_ms, line=c.oa.line,
                   checkin_secret=c.oa.checkin_secret, store=c.services.store)
        assert fresh.process_inbox() == 1
        assert len(c.sent(MALEE)) == n + 1
    finally:
        from central.oa.worker import Worker
        c.ext.worker = Worker(c.oa, 0.05, 0.1)
        c.ext.worker.start()
    # an event whose handling fails waits (1 s, then 2 s) and is tried again; nothing is lost
    c.ext.worker.stop()
    try:
        real = c.oa.handle
        calls = []

        def flaky(ev):
            calls.append(ev["webhookEventId"])
            if len(calls) <= 2:
                raise RuntimeError("database busy")
            return real(ev)
        c.oa.handle = flaky
        ev, _ = sandbox_oa.user_event(c.sb.state, "message", MALEE, text="courses")
        conn = c.services.appdb.connect()
        assert c.oa.process_inbox() == 1
        assert conn.execute("SELECT attempts, next_ms - ?, error FROM oa_inbox WHERE event_id = ?",
                            (c.clock.ms, ev["webhookEventId"])).fetchone() == (1, 1000, "RuntimeError: database busy")
        assert c.oa.process_inbox() == 0  # not yet due
        c.clock.ms += 1000
        c.oa.process_inbox()
        assert conn.execute("SELECT attempts, next_ms - ? FROM oa_inbox WHERE event_id = ?",
                            (c.clock.ms, ev["webhookEventId"])).fetchone() == (2, 2000)
        c.clock.ms += 2000
        c.oa.process_inbox()
        assert conn.execute("SELECT done_ms IS NOT NULL FROM oa_inbox WHERE event_id = ?",
                            (ev["webhookEventId"],)).fetchone() == (1,)
    finally:
        c.oa.handle = real
        from central.oa.worker import Worker
        c.ext.worker = Worker(c.oa, 0.05, 0.1)
        c.ext.worker.start()
    # LINE redelivers an event our endpoint failed to take (redelivery switched on)
    c.sb.state.oa.redelivery = True
    good = c.sb.state.oa.webhook_url
    c.sb.state.oa.webhook_url = c.url + "/line/webhook-missing"
    ev, status = sandbox_oa.user_event(c.sb.state, "message", MALEE, text="courses")
    assert status == 404
    c.sb.state.oa.webhook_url = good
    assert sandbox_oa.redeliver_failed(c.sb.state) == [200]
    c.settle()
    assert c.services.appdb.connect().execute("SELECT done_ms IS NOT NULL FROM oa_inbox WHERE event_id = ?",
                                              (ev["webhookEventId"],)).fetchone() == (1,)
    c.sb.state.oa.redelivery = False


def test_push_retries_reuse_the_key_and_429_backs_off(c):
    oa = c.oa
    oa.set_consent(SOMCHAI, "messages", True, "staff")
    c.services.appdb.connect().execute("INSERT OR IGNORE INTO oa_friends (user_id, is_friend) VALUES (?, 1)", (SOMCHAI,))
    c.ext.worker.stop()  # drive the outbox by hand
    try:
        # accepted by LINE but answered 500: the retry with the same key gets 409 = done, sent once
        c.sb.state.add_fault("push", "500-accepted")
        before = len(c.sb.state.list_pushes())
        oid = oa.queue_push(SOMCHAI, [{"type": "text", "text": "ทดสอบ test"}], "test")
        oa.flush_outbox()
        row = c.services.appdb.connect().execute("SELECT status, attempts, next_ms FROM oa_outbox WHERE id = ?",
                                                 (oid,)).fetchone()
        assert row[0] == "pending" and row[1] == 1
        c.clock.ms = row[2]
        oa.flush_outbox()
        status, key = c.services.appdb.connect().execute("SELECT status, retry_key FROM oa_outbox WHERE id = ?",
                                                         (oid,)).fetchone()
        assert status == "sent"
        attempts = [a for a in c.sb.state.list_push_attempts() if a["retry_key"] == key]
        assert [a["status"] for a in attempts] == [500, 409]
        assert len(c.sb.state.list_pushes()) == before + 1
        # 429: back off (1 s, then 2 s), same key each time, then sent
        c.sb.state.add_fault("push", "429", count=2)
        oid = oa.queue_push(SOMCHAI, [{"type": "text", "text": "ทดสอบ 2"}], "test")
        waits = []
        for _ in range(3):
            oa.flush_outbox()
            st, nxt, k = c.services.appdb.connect().execute(
                "SELECT status, next_ms, retry_key FROM oa_outbox WHERE id = ?", (oid,)).fetchone()
            if st == "sent":
                break
            waits.append(nxt - c.clock.ms)
            assert oa.flush_outbox() == 0  # not due yet: nothing sent early
            c.clock.ms = nxt
        assert st == "sent" and waits == [1000, 2000]
        assert [a["status"] for a in c.sb.state.list_push_attempts() if a["retry_key"] == k] == [429, 429, 200]
        # no consent, no push
        assert oa.queue_push(MALEE, [{"type": "text", "text": "x"}], "test") is None
    finally:
        from central.oa.worker import Worker
        c.ext.worker = Worker(c.oa, 0.05, 0.1)
        c.ext.worker.start()


def test_broadcast_shows_quota_and_refuses_when_over(c):
    oa = c.oa
    conn = c.services.appdb.connect()
    for u in (SOMCHAI, MALEE, NIRAN):
        conn.execute("INSERT INTO oa_friends (user_id, is_friend, office) VALUES (?, 1, 'Lampang') "
                     "ON CONFLICT (user_id) DO UPDATE SET is_friend = 1, office = 'Lampang'", (u,))
        oa.set_consent(u, "messages", True, "staff")
    conn.execute("INSERT OR REPLACE INTO oa_offices VALUES ('Lampang', 'ลำปาง')")
    state = c.sb.state.oa
    state.quota_limit = state.quota_used + 2
    p = oa.preview_broadcast(province="ลำปาง")
    assert p["recipients"] == 3 and p["remaining"] == 2 and not p["fits"]
    sent_before = len(state.sent)
    with pytest.raises(OaError, match=r"3 recipients but only 2 of \d+ messages left"):
        oa.send_broadcast("ข่าว", "News", "", "ลำปาง", "staff")
    assert len(state.sent) == sent_before
    state.quota_limit = state.quota_used + 100
    res = oa.send_broadcast("ข่าวอบรมใหม่", "New courses", "Lampang", "", "staff")
    assert res["recipients"] == 3
    c.settle()
    mc = [s for s in state.sent[sent_before:] if s["kind"] == "multicast"]
    assert len(mc) == 1 and sorted(mc[0]["to"]) == sorted([SOMCHAI, MALEE, NIRAN]) and mc[0]["retry_key"]
    assert oa.preview_broadcast(office="Nowhere")["recipients"] == 0
    # scheduled: nothing goes before its time; at its time the quota is checked again
    later = oa.send_broadcast("ข่าวพรุ่งนี้", "Tomorrow's news", "", "", "staff", send_at_ms=c.clock.ms + 3_600_000)
    assert later["scheduled"]
    assert oa.send_due_broadcasts() == 0
    state.quota_limit = state.quota_used + 1
    c.clock.ms += 3_600_000
    c.settle()
    wait_for(lambda: conn.execute("SELECT status FROM oa_broadcasts WHERE id = ?", (later["id"],)).fetchone()[0]
             == "refused", "the scheduled broadcast to be refused over the quota")
    assert "3 recipients but only 1" in conn.execute("SELECT detail FROM oa_broadcasts WHERE id = ?",
                                                     (later["id"],)).fetchone()[0]
    state.quota_limit = state.quota_used + 100


def test_staff_pages(c):
    conn = c.services.appdb.connect()
    acc = accounts.create(conn, "trainer1", "admin", "a long enough password 1", "root", c.clock.ms)
    http = c.app.test_client()
    assert http.get("/admin/oa/").status_code == 303  # not logged in: to the login page
    csrf = login(c, http, "trainer1", "a long enough password 1", acc.totp_secret)
    # CSV import: a bad row names its line and imports nothing
    bad = "code,office,province,title_th,title_en,skills\nA1,Lampang,ลำปาง,ก,A,x\nA2,,ลำปาง,ข,B,y\n".encode()
    import io
    r = http.post("/admin/oa/import/courses", data={"csrf": csrf, "file": (io.BytesIO(bad), "c.csv")},
                  content_type="multipart/form-data")
    assert "line+3" in r.headers["Location"] and "nothing+was+imported" in r.headers["Location"]
    assert conn.execute("SELECT count(*) FROM oa_courses WHERE code IN ('A1', 'A2')").fetchone()[0] == 0
    good = "\ufeffcode,office,province,title_th,title_en,skills\nA1,Lampang,ลำปาง,ช่างไฟ,Electrician,electrical\n".encode()
    r = http.post("/admin/oa/import/courses", data={"csrf": csrf, "file": (io.BytesIO(good), "c.csv")},
                  content_type="multipart/form-data")
    assert conn.execute("SELECT title_th FROM oa_courses WHERE code = 'A1'").fetchone() == ("ช่างไฟ",)
    cid = conn.execute("SELECT id FROM oa_courses WHERE code = 'A1'").fetchone()[0]
    r = http.post("/admin/oa/sessions", data={"csrf": csrf, "course_id": cid, "starts": "2026-12-02 09:00",
                                              "ends": "2026-12-02 12:00", "capacity": "5", "place": "A"})
    sid = conn.execute("SELECT id FROM oa_sessions WHERE course_id = ?", (cid,)).fetchone()[0]
    assert conn.execute("SELECT starts_ms FROM oa_sessions WHERE id = ?", (sid,)).fetchone()[0] == bkk_ms(2026, 12, 2, 9, 0)
    c.oa.register(SOMCHAI, sid)
    c.oa._attend(sid, SOMCHAI, bkk_ms(2026, 12, 2, 9, 5), "code")
    sheet = http.get(f"/admin/oa/sessions/{sid}/attendance").get_data(as_text=True)
    assert "oaMessage" in sheet and 'class="checkin-qr"' in sheet and 'id="nav-oa"' in sheet
    # test questions by CSV: a wrong answer number names its line, nothing stored; then stored
    q = "course_code,position,text_th,text_en,choices,answer\nA1,1,ไฟบ้านกี่โวลต์,Mains volts?,110|220,2\nA1,2,ก,B,x|y,3\n"
    r = http.post("/admin/oa/import/questions", data={"csrf": csrf, "file": (io.BytesIO(q.encode()), "q.csv")},
                  content_type="multipart/form-data")
    assert "line+3" in r.headers["Location"] and not c.oa.questions(cid)
    q = q.replace("x|y,3", "x|y,1")
    http.post("/admin/oa/import/questions", data={"csrf": csrf, "file": (io.BytesIO(q.encode()), "q.csv")},
              content_type="multipart/form-data")
    assert [(x["position"], x["choices"], x["answer"]) for x in c.oa.questions(cid)] == [(1, ["110", "220"], 1),
                                                                                     (2, ["x", "y"], 0)]
    csv_text = http.get(f"/admin/oa/sessions/{sid}/attendance?format=csv").get_data(as_text=True)
    assert SOMCHAI in csv_text and "code" in csv_text and "2026-12-02 09:05" in csv_text
    # employer vacancies wait for approval, then match
    vid = c.oa.add_vacancy("Shop", "Electrician", "electrical", "ลำปาง", "500", "2026-12-31", source="employer")
    assert not [v for v in c.oa.matches(SOMCHAI) if v["id"] == vid]
    http.post(f"/admin/oa/vacancies/{vid}/open", data={"csrf": csrf})
    assert [v for v in c.oa.matches(SOMCHAI) if v["id"] == vid]
    # WiFi logins synced from a box: visitors per office per day, friends the WiFi brought, and
    # the portal's optional consent box (an `events` row) turning into a recorded consent
    box = Box("box-cm-oa", "Chiang Mai")
    box.enrol(c)
    t = bkk_ms(2026, 12, 1, 9, 30)
    fr = login_row(box, t, MALEE, "Malee", "02:00:00:00:00:0c", "10.2.0.3")
    fr["friendship_changed"] = 1
    box.upload(c, {"logins": [fr, login_row(box, t + 60_000, NIRAN, "Niran", "02:00:00:00:00:0d", "10.2.0.4"),
                              login_row(box, t + 120_000, NIRAN, "Niran", "02:00:00:00:00:0d", "10.2.0.4")]})
    conn.execute("INSERT INTO oa_consent (user_id, kind, granted, at_ms, source) VALUES (?, 'messages', 0, ?, 'chat')",
                 (MALEE, c.clock.ms))
    upload_events(c, box, [[box.ids(1)[0], t, "oa_consent", MALEE, json.dumps({"given": True, "terms_version": "v1"})],
                           [box.ids(1)[0], t + 60_000, "oa_consent", NIRAN, json.dumps({"given": False})]])
    wait_for(lambda: conn.execute("SELECT source FROM oa_consent WHERE user_id = ? ORDER BY id DESC LIMIT 1",
                                  (MALEE,)).fetchone() == ("portal",), "the portal consent to be recorded")
    visitors = http.get("/admin/oa/charts?csv=visitors").get_data(as_text=True)
    assert "Chiang Mai,2026-12-01,2" in visitors
    assert "Chiang Mai,2026-12,1" in http.get("/admin/oa/charts?csv=friends").get_data(as_text=True)
    charts = http.get("/admin/oa/charts").get_data(as_text=True)
    assert "<svg" in charts and "http" not in charts.split("<main>")[1].replace("http://www.w3.org/2000/svg", "")
    data = http.get("/admin/oa/charts?csv=skills").get_data(as_text=True)
    assert "province,month,skill,trainees,vacancies" in data and "ลำปาง,2026-12,electrical,1,1" in data
    news = http.get("/admin/oa/news?province=ลำปาง").get_data(as_text=True)
    assert "ผู้รับ (ผู้ที่ยินยอม)" in news and "โควตาเดือนนี้" in news and "Recipients" not in news  # Thai first
    # the staff pages switch language like the admin pages (Babel catalogue, ?lang= then the cookie)
    en = http.get("/admin/oa/news?province=ลำปาง&lang=en").get_data(as_text=True)
    assert "Recipients (people who agreed):" in en and "Quota this month:" in en and "โควตา" not in en
    for path, th_words, en_words in (("/admin/oa/", ("อบรมและงาน", "หลักสูตร", "ตำแหน่งงาน", "เพิ่มรอบอบรม"),
                                      ("Training and jobs", "Courses", "Vacancies", "Add session")),
                                     (f"/admin/oa/sessions/{sid}/attendance", ("รหัสเช็คอิน", "เช็คอินเมื่อ"),
                                      ("Check-in code", "Checked in")),
                                     ("/admin/oa/charts", ("ตลาดแรงงาน", "ผู้ใช้ WiFi ต่อสำนักงานต่อวัน"),
                                      ("Labour market", "WiFi visitors per office per day"))):
        page_en = http.get(path).get_data(as_text=True)  # the cookie from the last ?lang=en keeps English
        assert all(w in page_en for w in en_words) and not any(w in page_en for w in th_words), path
        page_th = http.get(path + "?lang=th").get_data(as_text=True)
        assert all(w in page_th for w in th_words) and not any(w in page_th for w in en_words), path
        http.get(path + "?lang=en")
    # a viewer sees the sheet but cannot import or send news
    v = accounts.create(conn, "viewer1", "viewer", "another long password 2", "root", c.clock.ms)
    c.clock.ms += 60_000  # a fresh TOTP step
    viewer = c.app.test_client()
    vcsrf = login(c, viewer, "viewer1", "another long password 2", v.totp_secret)
    assert viewer.get(f"/admin/oa/sessions/{sid}/attendance").status_code == 200
    r = viewer.post("/admin/oa/import/courses", data={"csrf": vcsrf, "file": (io.BytesIO(good), "c.csv")},
                    content_type="multipart/form-data")
    assert r.status_code == 403
    assert viewer.get("/admin/oa/news").status_code == 403


def upload_events(c, box, rows: list[list]) -> None:
    """A batch with ledger `events` rows (a table without a fixed sync schema), as a box sends it."""
    from syncapi import batch as sbatch
    from tests.central_admin_util import API
    ids = [r[0] for r in rows]
    sections = {"events": {"from": min(ids) - 1, "to": max(ids), "columns": ["id", "at_ms", "kind", "subject", "detail"],
                           "rows": rows}}
    box.seq += 1
    _raw, h, wire = sbatch.build(box.box_id, box.seq, box.prev, c.clock.ms, sections)
    box._send(c, "POST", f"{API}/boxes/{box.box_id}/batches/{box.seq}", wire,
              {"Content-Type": sbatch.CONTENT_TYPE, sbatch.H_HASH: h})
    box.prev = h


def login(c, http, name: str, password: str, totp_secret: str) -> str:
    """Log in through the centre's admin login (password + TOTP); the CSRF token of the session."""
    import re

    import pyotp
    r = http.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.get_data(as_text=True)).group(1)
    r = http.post("/admin/login", data={"name": name, "password": password,
                                        "code": pyotp.TOTP(totp_secret).at(c.clock.ms / 1000), "csrf": csrf})
    assert r.status_code in (302, 303), r.get_data(as_text=True)[:300]
    html = http.get("/admin/oa/").get_data(as_text=True)
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_reminders_command_beside_the_service(c, tmp_path):
    """`central oa reminders` (for a timer) works on the app database while the service runs, and
    a second run reminds nobody twice."""
    import time

    from click.testing import CliRunner

    from central.cli import main
    now = int(time.time() * 1000)
    cid = c.oa.add_course("CLI-1", "Lampang", "ลำปาง", "ทดสอบคำสั่ง", "Command test", "x")
    sid = c.oa.add_session(cid, now + 2 * 3_600_000, now + 5 * 3_600_000, 3)
    c.oa.register(MALEE, sid)
    cfg = tmp_path / "central.toml"
    cfg.write_text(f'data_dir = "{c.services.appdb.path.parent}"\n[oa]\nenabled = true\napi_base_url = "{c.sb.url}"\n')
    runner = CliRunner()
    env = {"SKILLSPOT_OA_CHANNEL_SECRET": SECRET, "SKILLSPOT_OA_ACCESS_TOKEN": c.oa.line.configuration.access_token}
    before = len(c.sent(MALEE))
    r = runner.invoke(main, ["--config", str(cfg), "oa", "reminders"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reminders"] == 1
    got = [m for m in c.sent(MALEE)[before:] if "Command test" in (m.get("text") or "")]
    assert len(got) == 1 and got[0]["kind"] == "push"
    r = runner.invoke(main, ["--config", str(cfg), "oa", "reminders"], env=env)
    assert json.loads(r.output)["reminders"] == 0
    # without the secrets in the environment: a clear error naming the variables
    r = runner.invoke(main, ["--config", str(cfg), "oa", "reminders"], env={"SKILLSPOT_OA_CHANNEL_SECRET": ""})
    assert r.exit_code != 0 and "SKILLSPOT_OA_ACCESS_TOKEN" in r.output


def test_forget_me_erases_on_request(c):
    oa, conn = c.oa, c.services.appdb.connect()
    c.act("follow", MALEE)
    cid = oa.add_course("ERASE-1", "Lampang", "ลำปาง", "ลบ", "Erase", "cooking")
    sid = oa.add_session(cid, c.clock.ms + 5 * 86_400_000, c.clock.ms + 5 * 86_400_000 + 3_600_000, 1)
    c.act("postback", MALEE, data="a=consent&k=jobs&v=1")
    c.act("postback", MALEE, data=f"a=reg&s={sid}")
    c.act("postback", NIRAN, data=f"a=reg&s={sid}")  # waits
    c.act("message", MALEE, text="skill: cooking")
    c.wait_text(MALEE, "Skills saved")
    c.settle()
    n = len(c.sent(MALEE))
    c.act("message", MALEE, text="forget me")
    ask = c.wait_text(MALEE, "Erase what this account keeps", after=n)[0]
    c.act("postback", MALEE, data=ask["quickReply"]["items"][0]["action"]["data"])
    c.wait_text(MALEE, "Erased.", after=n)
    c.wait_text(NIRAN, "A seat came free")  # Malee's seat went to the waitlist
    assert oa.user_skills(MALEE) == [] and not oa.consents(MALEE, "messages") and not oa.consents(MALEE, "jobs")
    assert conn.execute("SELECT display_name FROM oa_friends WHERE user_id = ?", (MALEE,)).fetchone() == ("",)
    withdrawals = conn.execute("SELECT count(*) FROM oa_consent WHERE user_id = ? AND granted = 0", (MALEE,)).fetchone()[0]
    assert withdrawals >= 3
