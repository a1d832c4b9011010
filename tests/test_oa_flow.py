"""The DSD Official Account end to end through the LINE sandbox: follow → consent → register →
waitlist → reminder → check in by code → check in by WiFi login (synced from a box) → skill
test → job push → stop. Real HTTP both ways (the sandbox signs and POSTs webhooks to the
centre on loopback; the centre calls the sandbox through line-bot-sdk), real chDB, real SQLite."""
from __future__ import annotations

import pytest

pytest.importorskip("chdb")

from central.oa.service import DAY_MS  # noqa: E402
from lineapi.sandbox import default_users  # noqa: E402
from tests.central_admin_util import Box, login_row  # noqa: E402
from tests.oa_util import bkk_ms, oa_centre, wait_for  # noqa: E402

SOMCHAI, MALEE, NIRAN = (u.user_id for u in default_users())
HOUR = 3_600_000


def test_whole_conversation(tmp_path, monkeypatch):
    start = bkk_ms(2026, 11, 29, 10, 0)  # more than a day before the class
    with oa_centre(tmp_path, monkeypatch, start, jobs_per_week=1) as c:
        oa = c.oa
        office_box = Box("box-lpg-1", "Lampang")
        office_box.enrol(c)
        cid = oa.add_course("WELD-101", "Lampang", "ลำปาง", "งานเชื่อมเบื้องต้น", "Basic welding", "welding, safety")
        class_start = bkk_ms(2026, 12, 2, 9, 0)
        sid = oa.add_session(cid, class_start, class_start + 7 * HOUR, capacity=2, place="ห้อง 2")
        oa.add_question(cid, 1, "ต้องสวมอะไรขณะเชื่อม", "What do you wear when welding?", ["หน้ากาก Mask", "หมวก Cap"], 0)
        oa.add_question(cid, 2, "ถังแก๊สต้องตั้งอย่างไร", "How must a gas cylinder stand?", ["นอน Lying", "ตั้งตรง Upright"], 1)

        # -- follow: consent question (a reply), rich menu linked
        for u in (SOMCHAI, MALEE, NIRAN):
            c.act("follow", u)
            c.wait_text(u, "ข่าวสาร")
        assert all(m["kind"] == "reply" for u in (SOMCHAI, MALEE, NIRAN) for m in c.sent(u))
        # the menu is linked right after the reply: wait for it
        menu = wait_for(lambda: c.sb.state.oa.user_richmenu if {SOMCHAI, MALEE, NIRAN} <= set(c.sb.state.oa.user_richmenu)
                        else None, "the rich menu linked to all three")
        assert menu[SOMCHAI] == menu[MALEE] == menu[NIRAN] and menu[SOMCHAI] in c.sb.state.oa.richmenus
        assert len(c.sb.state.oa.richmenus) == 1  # made once, linked to each
        assert c.sb.state.oa.richmenu_images[menu[SOMCHAI]][0] == "image/jpeg"
        for data in ("a=consent&k=messages&v=1", "a=consent&k=jobs&v=1", "a=consent&k=auto_checkin&v=1"):
            c.act("postback", SOMCHAI, data=data)
        c.act("postback", NIRAN, data="a=consent&k=auto_checkin&v=1")
        c.act("postback", MALEE, data="a=consent&k=messages&v=1")
        c.settle()
        assert oa.consents(SOMCHAI, "jobs") and oa.consents(NIRAN, "auto_checkin") and not oa.consents(MALEE, "jobs")
        # block and unblock: unfollow stops everything; back again, the earlier consent is named
        c.act("unfollow", MALEE)
        c.settle()
        assert MALEE not in oa.consenting("messages")
        c.act("follow", MALEE)
        c.wait_text(MALEE, "Welcome back")
        assert MALEE in oa.consenting("messages")

        # -- register in the chat: carousel, two seats, the third waits
        n = len(c.sent(SOMCHAI))
        c.act("postback", SOMCHAI, data="a=courses")
        carousel = wait_for(lambda: [m for m in c.sent(SOMCHAI)[n:] if m["type"] == "flex"], "the course carousel")[0]
        button = carousel["contents"]["contents"][0]["footer"]["contents"][0]["action"]
        assert "Basic welding" in str(carousel) and "งานเชื่อมเบื้องต้น" in str(carousel)
        c.act("postback", SOMCHAI, data=button["data"])
        c.wait_text(SOMCHAI, "ลงทะเบียนสำเร็จ")
        c.act("postback", MALEE, data=f"a=reg&s={sid}")
        c.wait_text(MALEE, "ลงทะเบียนสำเร็จ")
        c.act("postback", NIRAN, data=f"a=reg&s={sid}")
        c.wait_text(NIRAN, "waitlist")
        c.act("postback", SOMCHAI, data=f"a=reg&s={sid}")  # again: still one seat, no change
        c.settle()
        regs = dict(c.services.appdb.connect().execute(
            "SELECT user_id, status FROM oa_registrations WHERE session_id = ?", (sid,)).fetchall())
        assert regs == {SOMCHAI: "confirmed", MALEE: "confirmed", NIRAN: "waitlist"}

        # -- Malee cancels: the seat goes to Niran, who gets a push (with a retry key)
        c.act("postback", MALEE, data=f"a=cancel&s={sid}")
        promoted = c.wait_text(NIRAN, "A seat came free")
        assert promoted[0]["kind"] == "push" and promoted[0]["retry_key"]

        # -- the reminder the day before (the worker's timer), once per trainee
        c.clock.ms = class_start - 20 * HOUR
        rem = c.wait_text(SOMCHAI, "Reminder")
        c.wait_text(NIRAN, "Reminder")
        c.settle()
        assert len(rem) == 1 and rem[0]["kind"] == "push" and rem[0]["retry_key"]
        assert oa.send_reminders() == 0
        assert not [m for m in c.sent(MALEE) if "Reminder" in (m.get("text") or "")]  # cancelled: no reminder

        # -- check in by code: too early refused; in class accepted once; forged refused
        token = oa.checkin_token(sid)
        assert token in oa.checkin_link(sid).replace("%20", " ")
        c.act("message", SOMCHAI, text=f"checkin {token}")
        c.wait_text(SOMCHAI, "only during its class")
        c.clock.ms = class_start + 10 * 60_000
        c.act("message", SOMCHAI, text=f"checkin {token}")
        c.wait_text(SOMCHAI, "Checked in.")
        c.act("message", SOMCHAI, text=f"checkin {token}")
        c.wait_text(SOMCHAI, "already checked in")
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        c.act("message", MALEE, text=f"checkin {forged}")
        c.wait_text(MALEE, "not valid")

        # -- check in by WiFi: Niran's phone logs into the Lampang box's WiFi during class; the box
        #    syncs the login to the centre; the worker matches it (Niran agreed to auto check-in).
        #    Malee (cancelled, no consent) logging in is not checked in.
        c.clock.ms = class_start + 40 * 60_000
        office_box.upload(c, {"logins": [
            login_row(office_box, class_start + 30 * 60_000, NIRAN, "Niran", "02:00:00:00:00:0a", "10.1.0.10"),
            login_row(office_box, class_start + 31 * 60_000, MALEE, "Malee", "02:00:00:00:00:0b", "10.1.0.11")]})
        c.wait_text(NIRAN, "Checked in automatically")
        sheet = {r["user_id"]: r for r in oa.attendance_sheet(sid)}
        assert sheet[SOMCHAI]["method"] == "code" and sheet[NIRAN]["method"] == "wifi"
        assert sheet[NIRAN]["checked_in_ms"] == class_start + 30 * 60_000
        assert MALEE not in sheet
        assert oa.display_names([NIRAN]) == {NIRAN: "Niran (already a friend)"}  # from LINE's profile on follow
        count = c.services.appdb.connect().execute("SELECT count(*) FROM oa_attendance WHERE session_id = ?",
                                                   (sid,)).fetchone()[0]
        assert count == 2
        assert oa.wifi_checkins() == 0  # counted once per session

        # the follower is linked to their WiFi logins: the centre knows Niran's office
        assert oa.link_wifi(NIRAN) == {"office": "Lampang", "logins": 1}

        # -- skill test: one question at a time; a double tap answers once
        n = len(c.sent(SOMCHAI))
        c.act("postback", SOMCHAI, data=f"a=test&c={cid}")
        q1 = wait_for(lambda: [m for m in c.sent(SOMCHAI)[n:] if "Question 1/2" in (m.get("text") or "")], "question 1")[0]
        right = q1["quickReply"]["items"][0]["action"]["data"]
        c.act("postback", SOMCHAI, data=right)
        c.act("postback", SOMCHAI, data=right)  # the same button tapped twice
        c.wait_text(SOMCHAI, "already answered", after=n)
        q2 = wait_for(lambda: [m for m in c.sent(SOMCHAI)[n:] if "Question 2/2" in (m.get("text") or "")], "question 2")
        assert len(q2) == 1
        c.act("postback", SOMCHAI, data=q2[0]["quickReply"]["items"][1]["action"]["data"])
        c.wait_text(SOMCHAI, "You passed Basic welding: 2/2")
        assert [(r["score"], r["total"], r["passed"]) for r in oa.results(SOMCHAI)] == [(2, 2, 1)]
        assert c.services.appdb.connect().execute("SELECT count(*) FROM oa_answers").fetchone()[0] == 2
        assert oa.user_skills(SOMCHAI) == ["safety", "welding"]

        # -- jobs: skills stated in the chat add to those from the course
        c.act("message", MALEE, text="skill: welding, forklift")
        c.wait_text(MALEE, "Skills saved")
        oa.add_vacancy("Lampang Steel", "ช่างเชื่อม Welder", "welding", "ลำปาง", "450/day", "2026-12-31")
        oa.add_vacancy("Northern Metal", "ช่างเชื่อม Welder 2", "welding, safety", "เชียงใหม่", "500/day", "2026-12-20")
        oa.add_vacancy("Bakery", "Baker", "baking", "ลำปาง", "400/day", "2026-12-31")
        oa.add_vacancy("Old Co", "Welder (closed)", "welding", "ลำปาง", "400/day", "2026-11-30")
        ranked = oa.matches(SOMCHAI)
        assert [v["employer"] for v in ranked] == ["Northern Metal", "Lampang Steel"]
        assert "welding" in ranked[0]["why"] and "2/2" in ranked[0]["why"]
        # Niran (no jobs consent) gets nothing; Somchai gets one (jobs_per_week = 1); Malee asked
        # only for news, not job messages
        assert oa.weekly_jobs() == 1
        job = c.wait_text(SOMCHAI, "New jobs for you")
        assert "Northern Metal" in job[0]["text"] and "Lampang Steel" not in job[0]["text"]
        assert job[0]["kind"] == "push" and job[0]["retry_key"]
        assert oa.weekly_jobs() == 0  # the week's cap is reached
        c.clock.ms += 7 * DAY_MS + 1
        oa.add_vacancy("Lampang Steel 2", "Welder", "welding", "ลำปาง", "460/day", "2027-01-31")
        assert oa.weekly_jobs() == 1
        assert not [m for m in c.sent(NIRAN) + c.sent(MALEE) if "New jobs" in (m.get("text") or "")]

        # -- stop is one tap; the withdrawal is recorded with its time; no more job messages
        c.act("postback", SOMCHAI, data="a=stop")
        c.wait_text(SOMCHAI, "Messages stopped")
        c.settle()
        log = c.services.appdb.connect().execute(
            "SELECT kind, granted, at_ms FROM oa_consent WHERE user_id = ? ORDER BY id", (SOMCHAI,)).fetchall()
        assert ("jobs", 0, c.clock.ms) in log and ("messages", 1, start) in log
        c.clock.ms += 7 * DAY_MS + 1
        oa.add_vacancy("Lampang Steel 3", "Welder", "welding", "ลำปาง", "470/day", "2027-02-28")
        assert oa.weekly_jobs() == 0

        # every push carried a retry key; every accepted push is unique by key
        keys = [p["retry_key"] for p in c.sb.state.list_pushes()]
        assert keys and all(keys) and len(keys) == len(set(keys))
