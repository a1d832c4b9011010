"""The Official Account's work: the inbox of webhook events, conversations (follow, messages,
postbacks), training registration with waitlists, reminders, attendance (code and WiFi), skill
tests, jobs matching, the outbox of pushes, consent.

Every SQL statement on the oa_* tables lives here. `Oa` is made once per process with its
services passed in (connection factory, clock, LINE client, traffic store).
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import sqlite3
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs

from central.oa import messages as M
from central.oa.line import LineClient, LineError, dumps

log = logging.getLogger("central.oa")
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MAX_ATTEMPTS = 8
CONSENT_KINDS = ("messages", "jobs", "auto_checkin")
# LINE fails a narrowcast whose audience has fewer than 50 people (progress errorCode 4): smaller
# groups go as multicasts of known user ids instead
NARROWCAST_MIN = 50
AUDIENCE_UPLOAD_MAX = 10_000  # user ids per audience upload call (JSON)
POLL_MS = 2_000               # how often an audience's status or a narrowcast's progress is read


class OaError(Exception):
    """Bad input from staff (CSV, form) or a refused send; str() says what and how to fix it."""


def _rows(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _one(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> dict | None:
    r = _rows(conn, sql, args)
    return r[0] if r else None


def skills_of(text: str) -> list[str]:
    """Skill tags from a comma/semicolon list, lower-cased, trimmed, without duplicates."""
    out: list[str] = []
    for part in text.replace(";", ",").split(","):
        s = part.strip().lower()
        if s and s not in out:
            out.append(s)
    return out


@dataclass
class Oa:
    """The OA's state and work, over the centre's SQLite app database."""

    connect: Callable[[], sqlite3.Connection]
    clock_ms: Callable[[], int]
    line: LineClient
    checkin_secret: bytes
    store: Any = None
    jobs_per_week: int = 3
    checkin_early_min: int = 30
    oa_basic_id: str = "@dsd"

    def __post_init__(self) -> None:
        self.wake = threading.Event()  # set when the inbox or outbox has new work
        self._menu_lock = threading.Lock()
        # the worker thread and a command or test may both run a round: one at a time, so an
        # event or an outbox item is never handled twice
        self.work_lock = threading.RLock()

    # ================================================================ inbox (webhook side)
    def accept(self, events: list[dict]) -> tuple[int, int]:
        """Store webhook events (already signature-checked) in one transaction; a webhookEventId
        seen before is dropped. Returns (new, duplicates). Called before LINE gets its 200."""
        conn, now = self.connect(), self.clock_ms()
        new = dup = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for ev in events:
                eid = ev.get("webhookEventId")
                if not isinstance(eid, str) or not eid:
                    continue
                cur = conn.execute("INSERT OR IGNORE INTO oa_inbox (event_id, event, received_ms) VALUES (?, ?, ?)",
                                   (eid, dumps(ev), now))
                if cur.rowcount:
                    new += 1
                else:
                    dup += 1
                    conn.execute("UPDATE oa_inbox SET redelivered = redelivered + 1 WHERE event_id = ?", (eid,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if new:
            self.wake.set()
        return new, dup

    def process_inbox(self, limit: int = 100) -> int:
        """Handle pending events oldest first (by LINE's timestamp, then arrival); returns how many."""
        with self.work_lock:
            return self._process_inbox(limit)

    def _process_inbox(self, limit: int) -> int:
        conn = self.connect()
        todo = _rows(conn, "SELECT id, event, attempts FROM oa_inbox WHERE done_ms IS NULL AND attempts < ? "
                           "AND next_ms <= ? ORDER BY json_extract(event, '$.timestamp'), id LIMIT ?",
                     (MAX_ATTEMPTS, self.clock_ms(), limit))
        for row in todo:
            try:
                self.handle(json.loads(row["event"]))
                conn.execute("UPDATE oa_inbox SET done_ms = ?, attempts = attempts + 1, error = NULL WHERE id = ?",
                             (self.clock_ms(), row["id"]))
            except Exception as exc:  # kept for a later try (backing off); the message says why
                log.warning("OA event %s failed: %s", row["id"], exc)
                conn.execute("UPDATE oa_inbox SET attempts = attempts + 1, next_ms = ?, error = ? WHERE id = ?",
                             (self.clock_ms() + 1000 * 2 ** row["attempts"], f"{type(exc).__name__}: {exc}"[:500],
                              row["id"]))
        return len(todo)

    # ================================================================ conversation
    def handle(self, ev: dict) -> None:
        """One webhook event. Standby mode: another channel is in charge; send nothing."""
        if ev.get("mode") == "standby":
            return
        user = (ev.get("source") or {}).get("userId")
        if not user:
            return
        kind, token = ev.get("type"), ev.get("replyToken")
        if kind == "follow":
            self._follow(user, ev.get("timestamp") or self.clock_ms(), token,
                         bool((ev.get("follow") or {}).get("isUnblocked")))
        elif kind == "unfollow":
            self.connect().execute("UPDATE oa_friends SET is_friend = 0, unfollowed_ms = ? WHERE user_id = ?",
                                   (ev.get("timestamp") or self.clock_ms(), user))
        elif kind == "message":
            msg = ev.get("message") or {}
            answer = self._on_text(user, msg.get("text", "")) if msg.get("type") == "text" else None
            self.respond(user, token, answer or [M.text("แตะเมนูด้านล่างเพื่อดูหลักสูตร งาน หรือหยุดรับข้อความ",
                                                       "Tap the menu below for courses, jobs, or to stop messages.")])
        elif kind == "postback":
            data = {k: v[-1] for k, v in parse_qs((ev.get("postback") or {}).get("data", "")).items()}
            self.respond(user, token, self._on_postback(user, data))

    def respond(self, user: str, reply_token: str | None, msgs: list[dict]) -> None:
        """Answer the user: reply (free) when the token still works, else a push from the outbox."""
        if not msgs:
            return
        if reply_token:
            res = self.line.reply(reply_token, msgs[:5])
            if res.outcome == "sent":
                return
        self.queue_push(user, msgs[:5], "answer", need_consent=False)

    def _follow(self, user: str, at_ms: int, token: str | None, unblocked: bool = False) -> None:
        conn = self.connect()
        name = self.line.display_name(user)
        conn.execute("INSERT INTO oa_friends (user_id, display_name, is_friend, followed_ms) VALUES (?, ?, 1, ?) "
                     "ON CONFLICT (user_id) DO UPDATE SET is_friend = 1, followed_ms = excluded.followed_ms, "
                     "display_name = CASE WHEN excluded.display_name != '' THEN excluded.display_name ELSE display_name END",
                     (user, name, at_ms))
        self.link_wifi(user)
        if unblocked and self.consents(user, "messages"):
            # back after blocking, with their earlier consent still in force: say so, offer stop
            self.respond(user, token, [M.text("ยินดีต้อนรับกลับ คุณยังรับข่าวสารอยู่ แตะ 'หยุด' เพื่อหยุดรับ",
                                              "Welcome back. You still get our messages; tap 'Stop' to stop.",
                                              [M.postback("หยุด Stop", "a=stop")])])
        else:
            self.respond(user, token, [M.consent_question()])
        try:
            self.ensure_rich_menu(user)
        except Exception as exc:  # the chat works without the menu (typed words too); never fail the follow
            log.warning("could not link the rich menu for a follower: %s", exc)

    def link_wifi(self, user: str) -> dict | None:
        """Link a follower to their WiFi logins (same provider: the same LINE user id), so the
        centre knows the office they visit most in the last 90 days. None if no store/logins."""
        if self.store is None:
            return None
        now = self.clock_ms()
        try:
            sessions = self.store.sessions_for_user(user, now - 90 * DAY_MS, now)
        except Exception:  # the traffic store is down: the link waits for the next follow/check
            return None
        mine = [s for s in sessions if s.get("line_user_id") == user]
        if not mine:
            return None
        office = Counter(s.get("office") or s.get("box_id") for s in mine).most_common(1)[0][0]
        via = any(s.get("friendship_changed") for s in mine)
        self.connect().execute("UPDATE oa_friends SET office = ?, logins = ?, via_wifi = max(via_wifi, ?) "
                               "WHERE user_id = ?", (office, len(mine), int(via), user))
        return {"office": office, "logins": len(mine)}

    def ensure_rich_menu(self, user: str) -> None:
        """Create the main rich menu once (id kept in oa_kv) and link it to `user`."""
        conn = self.connect()
        with self._menu_lock:
            row = _one(conn, "SELECT v FROM oa_kv WHERE k = 'rich_menu_id'")
            if row is None:
                rid = self.line.create_rich_menu(M.RICH_MENU, M.RICH_MENU_IMAGE.read_bytes(), "image/jpeg")
                conn.execute("INSERT OR REPLACE INTO oa_kv VALUES ('rich_menu_id', ?)", (rid,))
            else:
                rid = row["v"]
        self.line.link_rich_menu(user, rid)

    def _on_text(self, user: str, text: str) -> list[dict] | None:
        t = text.strip()
        low = t.lower()
        if low.startswith("checkin ") or t.startswith("เช็คอิน "):
            return [self.checkin_by_code(user, t.split(None, 1)[1].strip())]
        if low.startswith("skill:") or t.startswith("ทักษะ"):
            skills = skills_of(t.split(":", 1)[1] if ":" in t else t[len("ทักษะ"):])
            for s in skills:
                self.connect().execute("INSERT OR IGNORE INTO oa_user_skills VALUES (?, ?, 'stated', ?)",
                                       (user, s, self.clock_ms()))
            return [M.text("บันทึกทักษะแล้ว: " + ", ".join(skills), "Skills saved: " + ", ".join(skills))]
        if low in ("forget me", "ลบข้อมูลของฉัน"):
            return self._on_postback(user, {"a": "forget"})
        if low in ("stop", "หยุด"):
            return self._on_postback(user, {"a": "stop"})
        if low in ("courses", "หลักสูตร", "อบรม"):
            return self._on_postback(user, {"a": "courses"})
        return None

    def _on_postback(self, user: str, d: dict[str, str]) -> list[dict]:
        a = d.get("a")
        try:
            if a == "consent":
                kind, granted = d.get("k", ""), d.get("v") == "1"
                if kind not in CONSENT_KINDS:
                    raise OaError("unknown consent")
                self.set_consent(user, kind, granted, "chat")
                if kind == "jobs" and granted:
                    self.set_consent(user, "messages", True, "chat")
                return [M.text("บันทึกแล้ว ขอบคุณครับ/ค่ะ" if granted else "รับทราบ จะไม่ส่งข้อความถึงคุณ",
                               "Saved, thank you." if granted else "Understood: we will not message you.")]
            if a == "stop":
                for k in CONSENT_KINDS:
                    self.set_consent(user, k, False, "chat")
                return [M.text("หยุดส่งข้อความแล้ว แตะ 'รับข่าวสาร' เพื่อเริ่มใหม่",
                               "Messages stopped. Tap 'Yes' to start again.",
                               [M.postback("รับข่าวสาร Yes", "a=consent&k=messages&v=1")])]
            if a == "forget":
                if d.get("ok") != "1":
                    return [M.text("ลบข้อมูลของคุณที่บัญชีนี้เก็บไว้ (ทักษะ ผลทดสอบ การลงทะเบียนที่ยังไม่ถึงวัน) และหยุดส่งข้อความ?",
                                   "Erase what this account keeps about you (skills, test results, upcoming "
                                   "registrations) and stop all messages?",
                                   [M.postback("ลบ Erase", "a=forget&ok=1", "ลบข้อมูลของฉัน / Erase my data"),
                                    M.postback("ไม่ลบ Keep", "a=mine", "ไม่ลบ / Keep")])]
                self.erase(user)
                return [M.text("ลบข้อมูลแล้ว และจะไม่ส่งข้อความถึงคุณอีก", "Erased. We will not message you again.")]
            if a == "courses":
                return [M.courses_carousel(self.open_sessions())]
            if a == "reg":
                return [self.register(user, int(d["s"]))]
            if a == "cancel":
                return [self.cancel(user, int(d["s"]))]
            if a == "mine":
                return [self.my_sessions(user)]
            if a == "test":
                return [self.start_test(user, int(d["c"]))]
            if a == "ans":
                return self.answer(user, d.get("t", ""), int(d["q"]), int(d["c"]))
            if a == "jobs":
                return [self.jobs_message(user)]
        except (KeyError, ValueError):
            pass
        except OaError as exc:
            return [M.text("ทำรายการไม่ได้", str(exc))]
        return [M.text("ไม่เข้าใจคำสั่งนี้", "Sorry, that button is no longer valid.")]

    def erase(self, user: str) -> None:
        """PDPA erasure on request: withdraw every consent (the withdrawal stays on record as the
        proof), cancel upcoming registrations (their seats go to the waitlist), drop stated and
        earned skills, test attempts, job-push history, pending pushes and the profile name.
        Attendance at past classes stays: it is the department's record of the training given."""
        for k in CONSENT_KINDS:
            self.set_consent(user, k, False, "chat")
        conn, now = self.connect(), self.clock_ms()
        for r in _rows(conn, "SELECT r.session_id FROM oa_registrations r JOIN oa_sessions s ON s.id = r.session_id "
                             "WHERE r.user_id = ? AND r.status != 'cancelled' AND s.starts_ms > ?", (user, now)):
            self.cancel(user, r["session_id"])
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM oa_user_skills WHERE user_id = ?", (user,))
            conn.execute("DELETE FROM oa_job_pushes WHERE user_id = ?", (user,))
            conn.execute("DELETE FROM oa_answers WHERE attempt_id IN (SELECT id FROM oa_attempts WHERE user_id = ?)", (user,))
            conn.execute("DELETE FROM oa_attempts WHERE user_id = ?", (user,))
            conn.execute("UPDATE oa_outbox SET status = 'failed', error = 'erased on request' WHERE status = 'pending' "
                         "AND kind = 'push' AND target = ?", (dumps(user),))
            conn.execute("UPDATE oa_friends SET display_name = '', office = NULL, logins = 0 WHERE user_id = ?", (user,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ================================================================ consent
    def set_consent(self, user: str, kind: str, granted: bool, source: str) -> None:
        """Record a grant or a withdrawal, with its time (the log is never rewritten)."""
        if kind not in CONSENT_KINDS:
            raise OaError(f"consent kind must be one of {CONSENT_KINDS}")
        self.connect().execute("INSERT INTO oa_consent (user_id, kind, granted, at_ms, source) VALUES (?, ?, ?, ?, ?)",
                               (user, kind, int(granted), self.clock_ms(), source))

    def consents(self, user: str, kind: str) -> bool:
        """Whether `user` currently agrees to `kind` (the latest record; none means no)."""
        r = _one(self.connect(), "SELECT granted FROM oa_consent WHERE user_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
                 (user, kind))
        return bool(r and r["granted"])

    def consenting(self, kind: str) -> list[str]:
        """Friends who currently agree to `kind`."""
        return [r["user_id"] for r in _rows(self.connect(), """
            SELECT c.user_id FROM oa_consent c JOIN oa_friends f ON f.user_id = c.user_id AND f.is_friend = 1
            WHERE c.kind = ? AND c.id = (SELECT max(id) FROM oa_consent WHERE user_id = c.user_id AND kind = c.kind)
              AND c.granted = 1 ORDER BY c.user_id""", (kind,))]

    # ================================================================ outbox
    def queue_push(self, user: str, msgs: list[dict], purpose: str, need_consent: bool = True) -> int | None:
        """Queue a push (its retry key made now, reused on every attempt); None when the user has
        not agreed to messages (answers to their own taps pass `need_consent=False`)."""
        if need_consent and not self.consents(user, "messages"):
            return None
        now = self.clock_ms()
        cur = self.connect().execute(
            "INSERT INTO oa_outbox (kind, target, messages, retry_key, purpose, status, next_ms, created_ms) "
            "VALUES ('push', ?, ?, ?, ?, 'pending', ?, ?)", (dumps(user), dumps(msgs[:5]), str(uuid.uuid4()), purpose, now, now))
        self.wake.set()
        return cur.lastrowid

    def queue_multicast(self, users: list[str], msgs: list[dict], purpose: str) -> list[int]:
        """Queue multicasts of <= 500 users each (one retry key per call)."""
        now, ids = self.clock_ms(), []
        for i in range(0, len(users), 500):
            cur = self.connect().execute(
                "INSERT INTO oa_outbox (kind, target, messages, retry_key, purpose, status, next_ms, created_ms) "
                "VALUES ('multicast', ?, ?, ?, ?, 'pending', ?, ?)",
                (dumps(users[i:i + 500]), dumps(msgs[:5]), str(uuid.uuid4()), purpose, now, now))
            ids.append(cur.lastrowid)
        self.wake.set()
        return ids

    def flush_outbox(self, limit: int = 50) -> int:
        """Send due outbox items; 5xx/timeout/429 wait (1 s, 2 s, 4 s ... up to 10 min) and retry
        with the same key; returns how many were attempted."""
        with self.work_lock:
            return self._flush_outbox(limit)

    def _flush_outbox(self, limit: int) -> int:
        conn, now = self.connect(), self.clock_ms()
        due = _rows(conn, "SELECT * FROM oa_outbox WHERE status = 'pending' AND next_ms <= ? ORDER BY id LIMIT ?",
                    (now, limit))
        for item in due:
            target, msgs = json.loads(item["target"]), json.loads(item["messages"])
            if item["kind"] == "push":
                res = self.line.push(target, msgs, item["retry_key"])
            else:
                res = self.line.multicast(target, msgs, item["retry_key"])
            attempts = item["attempts"] + 1
            if res.outcome == "sent":
                conn.execute("UPDATE oa_outbox SET status = 'sent', attempts = ?, sent_ms = ?, error = NULL WHERE id = ?",
                             (attempts, self.clock_ms(), item["id"]))
            elif res.outcome == "retry" and attempts < MAX_ATTEMPTS:
                wait = min(600_000, 1000 * 2 ** (attempts - 1))
                conn.execute("UPDATE oa_outbox SET attempts = ?, next_ms = ?, error = ? WHERE id = ?",
                             (attempts, self.clock_ms() + wait, f"HTTP {res.status} {res.detail}"[:300], item["id"]))
            else:
                conn.execute("UPDATE oa_outbox SET status = 'failed', attempts = ?, error = ? WHERE id = ?",
                             (attempts, f"HTTP {res.status} {res.detail}"[:300], item["id"]))
        return len(due)

    # ================================================================ training
    def open_sessions(self, office: str | None = None) -> list[dict]:
        """Sessions not yet started, with seats taken, soonest first."""
        return _rows(self.connect(), """
            SELECT s.id AS session_id, s.starts_ms, s.ends_ms, s.capacity, s.place, c.id AS course_id, c.office,
                   c.title_th, c.title_en,
                   (SELECT count(*) FROM oa_registrations r WHERE r.session_id = s.id AND r.status = 'confirmed') AS taken
            FROM oa_sessions s JOIN oa_courses c ON c.id = s.course_id
            WHERE s.starts_ms > ? AND (? IS NULL OR c.office = ?) ORDER BY s.starts_ms LIMIT 10""",
                     (self.clock_ms(), office, office))

    def session(self, session_id: int) -> dict | None:
        return _one(self.connect(), """
            SELECT s.id AS session_id, s.*, c.office, c.title_th, c.title_en, c.skills, c.id AS course_id
            FROM oa_sessions s JOIN oa_courses c ON c.id = s.course_id WHERE s.id = ?""", (session_id,))

    def register(self, user: str, session_id: int) -> dict:
        """Register `user`: a seat if one is free, else the waitlist. Registering again is harmless."""
        conn, now = self.connect(), self.clock_ms()
        s = self.session(session_id)
        if s is None or s["starts_ms"] <= now:
            raise OaError("This session has started or does not exist. / รอบนี้เริ่มแล้วหรือไม่มีอยู่")
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = _one(conn, "SELECT status FROM oa_registrations WHERE session_id = ? AND user_id = ?", (session_id, user))
            if cur is None or cur["status"] == "cancelled":
                taken = conn.execute("SELECT count(*) FROM oa_registrations WHERE session_id = ? AND status = 'confirmed'",
                                     (session_id,)).fetchone()[0]
                status = "confirmed" if taken < s["capacity"] else "waitlist"
                # a re-registration goes to the back of the queue: a fresh id
                conn.execute("DELETE FROM oa_registrations WHERE session_id = ? AND user_id = ?", (session_id, user))
                conn.execute("INSERT INTO oa_registrations (session_id, user_id, status, created_ms, updated_ms) "
                             "VALUES (?, ?, ?, ?, ?)", (session_id, user, status, now, now))
            else:
                status = cur["status"]
            pos = self._waitlist_position(conn, session_id, user) if status == "waitlist" else None
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return M.confirmation(dict(s, position=pos), status)

    @staticmethod
    def _waitlist_position(conn: sqlite3.Connection, session_id: int, user: str) -> int:
        return conn.execute("SELECT count(*) FROM oa_registrations WHERE session_id = ? AND status = 'waitlist' AND "
                            "id <= (SELECT id FROM oa_registrations WHERE session_id = ? AND user_id = ?)",
                            (session_id, session_id, user)).fetchone()[0]

    def cancel(self, user: str, session_id: int) -> dict:
        """Cancel; a freed seat goes to the first on the waitlist, who gets a message."""
        conn, now = self.connect(), self.clock_ms()
        promoted = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = _one(conn, "SELECT status FROM oa_registrations WHERE session_id = ? AND user_id = ?", (session_id, user))
            if cur is None or cur["status"] == "cancelled":
                conn.execute("ROLLBACK")
                return M.text("คุณไม่ได้ลงทะเบียนรอบนี้", "You are not registered for this session.")
            conn.execute("UPDATE oa_registrations SET status = 'cancelled', updated_ms = ? WHERE session_id = ? AND user_id = ?",
                         (now, session_id, user))
            if cur["status"] == "confirmed":
                first = _one(conn, "SELECT id, user_id FROM oa_registrations WHERE session_id = ? AND status = 'waitlist' "
                                   "ORDER BY id LIMIT 1", (session_id,))
                if first is not None:
                    conn.execute("UPDATE oa_registrations SET status = 'confirmed', updated_ms = ? WHERE id = ?",
                                 (now, first["id"]))
                    promoted = first["user_id"]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        s = self.session(session_id)
        if promoted is not None and s is not None:
            # they asked for this seat: an answer to their own request, sent even without news consent
            self.queue_push(promoted, [M.text("มีที่ว่างแล้ว! คุณได้ที่นั่งในรอบนี้", "A seat came free: you are in!"),
                                       M.confirmation(s, "confirmed")], "waitlist", need_consent=False)
        return M.text("ยกเลิกแล้ว", "Cancelled.")

    def my_sessions(self, user: str) -> dict:
        rows = _rows(self.connect(), """
            SELECT r.status, s.starts_ms, c.title_th, c.title_en, c.id AS course_id FROM oa_registrations r
            JOIN oa_sessions s ON s.id = r.session_id JOIN oa_courses c ON c.id = s.course_id
            WHERE r.user_id = ? AND r.status != 'cancelled' ORDER BY s.starts_ms""", (user,))
        if not rows:
            return M.text("ยังไม่มีการลงทะเบียน", "You have no registrations.")
        lines = [f"{M.when(r['starts_ms'])} {r['title_th']} / {r['title_en']} ({r['status']})" for r in rows]
        quick = [M.postback(f"ทดสอบ Test {r['course_id']}", f"a=test&c={r['course_id']}") for r in rows]
        return M.text("การลงทะเบียนของคุณ:\n" + "\n".join(lines), "Your registrations are listed above.", quick)

    def send_reminders(self) -> int:
        """Remind confirmed trainees of sessions starting in the next 24 h (once each); returns count."""
        conn, now = self.connect(), self.clock_ms()
        due = _rows(conn, """
            SELECT r.id, r.user_id, s.id AS session_id FROM oa_registrations r JOIN oa_sessions s ON s.id = r.session_id
            WHERE r.status = 'confirmed' AND r.reminded_ms IS NULL AND s.starts_ms > ? AND s.starts_ms <= ?""",
                    (now, now + DAY_MS))
        n = 0
        for r in due:
            # claim first: the worker and `central oa reminders` may run at once; one reminds
            if not conn.execute("UPDATE oa_registrations SET reminded_ms = ? WHERE id = ? AND reminded_ms IS NULL",
                                (now, r["id"])).rowcount:
                continue
            s = self.session(r["session_id"])
            msg = M.text(f"แจ้งเตือน: พรุ่งนี้ {M.when(s['starts_ms'])} อบรม {s['title_th']} ที่ {s['office']} {s['place']}",
                         f"Reminder: {s['title_en']} starts {M.when(s['starts_ms'])} at {s['office']} {s['place']}. "
                         "Check in by scanning the code shown in class.",
                         [M.postback("ยกเลิก Cancel", f"a=cancel&s={s['session_id']}")])
            # a reminder of their own registration: part of the service they asked for
            self.queue_push(r["user_id"], [msg], "reminder", need_consent=False)
            n += 1
        return n

    # ================================================================ attendance
    def checkin_token(self, session_id: int) -> str:
        """The code shown in class: session id + window end, signed with the centre's secret."""
        s = self.session(session_id)
        if s is None:
            raise OaError(f"no session {session_id}")
        payload = f"{session_id}.{s['ends_ms']}"
        sig = hmac.new(self.checkin_secret, payload.encode(), hashlib.sha256).digest()[:12]
        return f"{payload}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"

    def checkin_link(self, session_id: int) -> str:
        """What the class QR code holds: LINE's oaMessage link that sends 'checkin <token>' to the OA."""
        from urllib.parse import quote
        return f"https://line.me/R/oaMessage/{quote(self.oa_basic_id)}/?{quote('checkin ' + self.checkin_token(session_id))}"

    def checkin_by_code(self, user: str, token: str) -> dict:
        """Check in with a scanned code; valid only from `checkin_early_min` before start to the end."""
        try:
            sid, end, sig = token.split(".")
            session_id = int(sid)
            good = hmac.new(self.checkin_secret, f"{sid}.{end}".encode(), hashlib.sha256).digest()[:12]
            ok = hmac.compare_digest(base64.urlsafe_b64encode(good).decode().rstrip("="), sig)
        except ValueError:
            ok = False
        if not ok:
            return M.text("รหัสเช็คอินไม่ถูกต้อง", "That check-in code is not valid.")
        s = self.session(session_id)
        now = self.clock_ms()
        if s is None or str(s["ends_ms"]) != end or not (s["starts_ms"] - self.checkin_early_min * 60_000 <= now <= s["ends_ms"]):
            return M.text("รหัสนี้ใช้ได้เฉพาะช่วงเวลาเรียนเท่านั้น", "This code works only during its class.")
        reg = _one(self.connect(), "SELECT status FROM oa_registrations WHERE session_id = ? AND user_id = ?",
                   (session_id, user))
        if reg is None or reg["status"] != "confirmed":
            return M.text("คุณไม่ได้ลงทะเบียนรอบนี้ กรุณาติดต่อเจ้าหน้าที่", "You are not registered for this class: please see the staff.")
        first = self._attend(session_id, user, now, "code")
        return M.text("เช็คอินสำเร็จ" if first else "คุณเช็คอินแล้ว", "Checked in." if first else "You were already checked in.")

    def _attend(self, session_id: int, user: str, at_ms: int, method: str) -> bool:
        cur = self.connect().execute("INSERT OR IGNORE INTO oa_attendance VALUES (?, ?, ?, ?)", (session_id, user, at_ms, method))
        if cur.rowcount:
            s = self.session(session_id)
            for skill in skills_of(s["skills"] if s else ""):
                self.connect().execute("INSERT OR IGNORE INTO oa_user_skills VALUES (?, ?, 'course', ?)", (user, skill, at_ms))
        return bool(cur.rowcount)

    def wifi_checkins(self, lookback_ms: int = DAY_MS) -> int:
        """Check in confirmed trainees who agreed to it and whose phone logged into the WiFi of the
        class's office during its hours (logins reach the store through sync). Returns new check-ins."""
        if self.store is None:
            return 0
        conn, now = self.connect(), self.clock_ms()
        cands = _rows(conn, """
            SELECT r.user_id, s.id AS session_id, s.starts_ms, s.ends_ms, c.office
            FROM oa_registrations r JOIN oa_sessions s ON s.id = r.session_id JOIN oa_courses c ON c.id = s.course_id
            WHERE r.status = 'confirmed' AND s.starts_ms <= ? AND s.ends_ms >= ?
              AND NOT EXISTS (SELECT 1 FROM oa_attendance a WHERE a.session_id = s.id AND a.user_id = r.user_id)""",
                      (now, now - lookback_ms))
        agreed = set(self.consenting("auto_checkin"))
        cands = [c for c in cands if c["user_id"] in agreed]
        if not cands:
            return 0
        # one store query per pass for every candidate, not one per trainee
        by_user: dict[str, list[dict]] = {}
        for x in self.store.logins_of_users(sorted({c["user_id"] for c in cands}), min(c["starts_ms"] for c in cands),
                                            max(c["ends_ms"] for c in cands)):
            by_user.setdefault(x["line_user_id"], []).append(x)
        n = 0
        for c in cands:
            hits = [x for x in by_user.get(c["user_id"], []) if x["office"] == c["office"]
                    and x["login_ms"] <= c["ends_ms"] and x["end_ms"] >= c["starts_ms"]]
            if hits and self._attend(c["session_id"], c["user_id"], max(c["starts_ms"], min(h["login_ms"] for h in hits)),
                                     "wifi"):
                n += 1
                s = self.session(c["session_id"])
                self.queue_push(c["user_id"], [M.text(f"เช็คอินอัตโนมัติแล้ว: {s['title_th']}",
                                                      f"Checked in automatically: {s['title_en']}")], "checkin",
                                need_consent=False)
        return n

    def display_names(self, users: list[str]) -> dict[str, str]:
        """Display names known from follow events, for staff pages."""
        if not users:
            return {}
        marks = ",".join("?" * len(users))
        return {r["user_id"]: r["display_name"] for r in
                _rows(self.connect(), f"SELECT user_id, display_name FROM oa_friends WHERE user_id IN ({marks})", tuple(users))}

    def attendance_sheet(self, session_id: int) -> list[dict]:
        """Every registration of a session with its check-in, for staff."""
        return _rows(self.connect(), """
            SELECT r.user_id, r.status, a.at_ms AS checked_in_ms, a.method FROM oa_registrations r
            LEFT JOIN oa_attendance a ON a.session_id = r.session_id AND a.user_id = r.user_id
            WHERE r.session_id = ? AND r.status != 'cancelled' ORDER BY r.status, r.id""", (session_id,))

    # ================================================================ skill tests
    def start_test(self, user: str, course_id: int) -> dict:
        qs = self.questions(course_id)
        if not qs:
            raise OaError("This course has no test yet. / หลักสูตรนี้ยังไม่มีแบบทดสอบ")
        token = uuid.uuid4().hex
        self.connect().execute("INSERT INTO oa_attempts (token, user_id, course_id, started_ms) VALUES (?, ?, ?, ?)",
                               (token, user, course_id, self.clock_ms()))
        return M.question(qs[0], 1, len(qs), token)

    def questions(self, course_id: int) -> list[dict]:
        out = _rows(self.connect(), "SELECT * FROM oa_questions WHERE course_id = ? ORDER BY position", (course_id,))
        for q in out:
            q["choices"] = json.loads(q["choices"])
        return out

    def answer(self, user: str, token: str, question_id: int, choice: int) -> list[dict]:
        """Record one answer; a second tap on the same question is ignored (primary key)."""
        conn = self.connect()
        att = _one(conn, "SELECT * FROM oa_attempts WHERE token = ? AND user_id = ?", (token, user))
        if att is None:
            raise OaError("This test is not yours or has expired.")
        qs = self.questions(att["course_id"])
        q = next((x for x in qs if x["id"] == question_id), None)
        if q is None or not 0 <= choice < len(q["choices"]):
            raise OaError("Unknown question or choice.")
        if att["finished_ms"] is not None:
            return [M.text("แบบทดสอบนี้ส่งแล้ว", "This test is already finished.")]
        cur = conn.execute("INSERT OR IGNORE INTO oa_answers VALUES (?, ?, ?, ?, ?)",
                           (att["id"], question_id, choice, int(choice == q["answer"]), self.clock_ms()))
        if not cur.rowcount:
            return [M.text("ตอบข้อนี้แล้ว", "You already answered this question.")]
        done = {r["question_id"] for r in _rows(conn, "SELECT question_id FROM oa_answers WHERE attempt_id = ?", (att["id"],))}
        rest = [x for x in qs if x["id"] not in done]
        if rest:
            return [M.question(rest[0], len(done) + 1, len(qs), token)]
        score = conn.execute("SELECT coalesce(sum(correct), 0) FROM oa_answers WHERE attempt_id = ?", (att["id"],)).fetchone()[0]
        course = _one(conn, "SELECT * FROM oa_courses WHERE id = ?", (att["course_id"],))
        passed = score * 100 >= course["pass_percent"] * len(qs)
        cur = conn.execute("UPDATE oa_attempts SET finished_ms = ?, score = ?, total = ?, passed = ? "
                           "WHERE id = ? AND finished_ms IS NULL", (self.clock_ms(), score, len(qs), int(passed), att["id"]))
        if passed:
            for skill in skills_of(course["skills"]):
                conn.execute("INSERT OR IGNORE INTO oa_user_skills VALUES (?, ?, 'course', ?)", (user, skill, self.clock_ms()))
            return [M.text(f"ยินดีด้วย! คุณผ่านแบบทดสอบ {course['title_th']} ได้ {score}/{len(qs)} คะแนน",
                           f"Congratulations! You passed {course['title_en']}: {score}/{len(qs)}.")]
        return [M.text(f"ได้ {score}/{len(qs)} คะแนน ยังไม่ผ่าน ลองใหม่ได้", f"You scored {score}/{len(qs)}: not a pass yet. Try again any time.",
                       [M.postback("ลองใหม่ Retry", f"a=test&c={course['id']}")])]

    def results(self, user: str) -> list[dict]:
        return _rows(self.connect(), "SELECT course_id, score, total, passed, finished_ms FROM oa_attempts "
                                     "WHERE user_id = ? AND finished_ms IS NOT NULL ORDER BY id", (user,))

    # ================================================================ jobs
    def user_skills(self, user: str) -> list[str]:
        return [r["skill"] for r in _rows(self.connect(), "SELECT skill FROM oa_user_skills WHERE user_id = ? ORDER BY skill",
                                          (user,))]

    def user_province(self, user: str) -> str | None:
        r = _one(self.connect(), "SELECT o.province FROM oa_friends f JOIN oa_offices o ON o.office = f.office "
                                 "WHERE f.user_id = ?", (user,))
        return r["province"] if r else None

    def matches(self, user: str, only_new_since_ms: int | None = None) -> list[dict]:
        """Open vacancies ranked for `user`: share of the vacancy's skills they have, plus a bonus
        for their province; each with a one-line explanation."""
        have, province = set(self.user_skills(user)), self.user_province(user)
        today = dt.datetime.fromtimestamp(self.clock_ms() / 1000, M.BKK).date().isoformat()
        out = []
        for v in _rows(self.connect(), "SELECT * FROM oa_vacancies WHERE status = 'open' AND closes_on >= ? "
                                       "AND (? IS NULL OR created_ms >= ?)", (today, only_new_since_ms, only_new_since_ms)):
            need = skills_of(v["skills"])
            common = [s for s in need if s in have]
            if need and not common:
                continue
            score = (len(common) / len(need) if need else 0.2) + (0.25 if province and v["province"] == province else 0)
            why = f"ทักษะตรง {len(common)}/{len(need)}: {', '.join(common) or '-'}"
            why += f" · จังหวัดเดียวกัน ({province})" if province and v["province"] == province else ""
            why += f" / skills {len(common)}/{len(need)} match"
            out.append(dict(v, score=round(score, 3), why=why))
        out.sort(key=lambda v: (-v["score"], v["closes_on"], v["id"]))
        return out

    def jobs_message(self, user: str) -> dict:
        top = self.matches(user)[:5]
        if not top:
            return M.text("ยังไม่มีงานที่ตรงกับทักษะของคุณ บอกทักษะได้ เช่น 'ทักษะ: เชื่อม'",
                          "No matching jobs yet. Tell us your skills, e.g. 'skill: welding'.")
        lines = [f"• {v['position']} – {v['employer']} ({v['province']}, {v['wage']}) ปิด {v['closes_on']}\n  {v['why']}" for v in top]
        return M.text("งานที่เหมาะกับคุณ:\n" + "\n".join(lines), "Jobs that match you (above).")

    def weekly_jobs(self) -> int:
        """Push the best new vacancies of the past week to people who asked for job messages,
        never more than `jobs_per_week` per person per rolling week. Returns pushes queued."""
        conn, now = self.connect(), self.clock_ms()
        n = 0
        for user in self.consenting("jobs"):
            if not self.consents(user, "messages"):
                continue
            sent = conn.execute("SELECT count(*) FROM oa_job_pushes WHERE user_id = ? AND at_ms > ?",
                                (user, now - WEEK_MS)).fetchone()[0]
            room = self.jobs_per_week - sent
            if room <= 0:
                continue
            fresh = [v for v in self.matches(user, now - WEEK_MS)
                     if conn.execute("SELECT 1 FROM oa_job_pushes WHERE user_id = ? AND vacancy_id = ?",
                                     (user, v["id"])).fetchone() is None][:room]
            if not fresh:
                continue
            lines = [f"• {v['position']} – {v['employer']} ({v['province']}, {v['wage']})\n  {v['why']}" for v in fresh]
            # one transaction: the vacancies are claimed for this person and the push is queued
            # together (the primary key stops a second runner from sending them again)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for v in fresh:
                    conn.execute("INSERT INTO oa_job_pushes VALUES (?, ?, ?)", (user, v["id"], now))
                self.queue_push(user, [M.text("งานใหม่ที่ตรงกับคุณ:\n" + "\n".join(lines),
                                              "New jobs for you (above). Tap 'Stop' in the menu to stop.")], "jobs")
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                continue
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            n += 1
        return n

    # ================================================================ staff data: courses, vacancies
    def add_course(self, code: str, office: str, province: str, title_th: str, title_en: str, skills: str,
                   pass_percent: int = 60) -> int:
        if not code.strip() or not office.strip() or not title_th.strip() or not title_en.strip():
            raise OaError("code, office, title_th and title_en are required")
        conn = self.connect()
        if province.strip():
            conn.execute("INSERT OR REPLACE INTO oa_offices VALUES (?, ?)", (office.strip(), province.strip()))
        try:
            return conn.execute("INSERT INTO oa_courses (code, office, title_th, title_en, skills, pass_percent) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (code.strip(), office.strip(), title_th.strip(),
                                                              title_en.strip(), ",".join(skills_of(skills)),
                                                              pass_percent)).lastrowid
        except sqlite3.IntegrityError:
            raise OaError(f"a course with code {code!r} exists already") from None

    def add_session(self, course_id: int, starts_ms: int, ends_ms: int, capacity: int, place: str = "") -> int:
        if ends_ms <= starts_ms or capacity < 1:
            raise OaError("a session ends after it starts and has at least one seat")
        if _one(self.connect(), "SELECT id FROM oa_courses WHERE id = ?", (course_id,)) is None:
            raise OaError(f"no course {course_id}")
        return self.connect().execute("INSERT INTO oa_sessions (course_id, starts_ms, ends_ms, capacity, place) "
                                      "VALUES (?, ?, ?, ?, ?)", (course_id, starts_ms, ends_ms, capacity, place)).lastrowid

    def add_question(self, course_id: int, position: int, text_th: str, text_en: str, choices: list[str], answer: int) -> int:
        if not 2 <= len(choices) <= 4 or not 0 <= answer < len(choices):
            raise OaError("a question has 2 to 4 choices and the answer is one of them")
        return self.connect().execute("INSERT INTO oa_questions (course_id, position, text_th, text_en, choices, answer) "
                                      "VALUES (?, ?, ?, ?, ?, ?)", (course_id, position, text_th, text_en,
                                                                     dumps(choices), answer)).lastrowid

    def _import_question(self, course_code: str, position: str, text_th: str, text_en: str, choices: str,
                         answer: str) -> int:
        """One CSV question: choices separated by '|', answer = the right choice's number (1-based)."""
        course = _one(self.connect(), "SELECT id FROM oa_courses WHERE code = ?", (course_code,))
        if course is None:
            raise OaError(f"no course with code {course_code!r}")
        labels = [c.strip() for c in choices.split("|") if c.strip()]
        try:
            pos, ans = int(position), int(answer) - 1
        except ValueError:
            raise OaError("position and answer must be numbers (answer: 1 for the first choice)") from None
        if not text_th or not text_en:
            raise OaError("text_th and text_en are required")
        try:
            return self.add_question(course["id"], pos, text_th, text_en, labels, ans)
        except sqlite3.IntegrityError:
            raise OaError(f"course {course_code} already has a question at position {pos}") from None

    def add_vacancy(self, employer: str, position: str, skills: str, province: str, wage: str, closes_on: str,
                    source: str = "staff", contact: str = "") -> int:
        """A vacancy; employer submissions wait for staff approval ('pending')."""
        for name, val in (("employer", employer), ("position", position), ("province", province)):
            if not val.strip():
                raise OaError(f"{name} is required")
        try:
            dt.date.fromisoformat(closes_on.strip())
        except ValueError:
            raise OaError(f"closing date {closes_on!r} must be YYYY-MM-DD") from None
        status = "pending" if source == "employer" else "open"
        return self.connect().execute(
            "INSERT INTO oa_vacancies (employer, position, skills, province, wage, closes_on, status, source, contact, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (employer.strip(), position.strip(), ",".join(skills_of(skills)),
                                                      province.strip(), wage.strip(), closes_on.strip(), status, source,
                                                      contact.strip(), self.clock_ms())).lastrowid

    def set_vacancy_status(self, vacancy_id: int, status: str) -> None:
        if status not in ("open", "rejected"):
            raise OaError("status must be open or rejected")
        self.connect().execute("UPDATE oa_vacancies SET status = ? WHERE id = ?", (status, vacancy_id))

    def import_csv(self, kind: str, data: bytes) -> int:
        """Import courses (code,office,province,title_th,title_en,skills) or vacancies
        (employer,position,skills,province,wage,closes_on). All rows or none: the first bad row
        is named with its line number and nothing is stored."""
        need = {"courses": ("code", "office", "province", "title_th", "title_en", "skills"),
                "vacancies": ("employer", "position", "skills", "province", "wage", "closes_on"),
                "questions": ("course_code", "position", "text_th", "text_en", "choices", "answer")}[kind]
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise OaError("the CSV file is not UTF-8: save it as 'CSV UTF-8'") from None
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise OaError(f"the CSV header lacks {', '.join(missing)}; it needs {','.join(need)}")
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        n = 0
        try:
            for row in reader:
                vals = [(row.get(c) or "").strip() for c in need]
                try:
                    if kind == "courses":
                        self.add_course(*vals)
                    elif kind == "vacancies":
                        self.add_vacancy(*vals, source="csv")
                    else:
                        self._import_question(*vals)
                except OaError as exc:
                    raise OaError(f"line {reader.line_num}: {exc}; nothing was imported") from None
                n += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return n

    # ================================================================ news / broadcast
    def audience(self, office: str = "", province: str = "") -> list[str]:
        """Friends who agreed to messages, narrowed to an office or a province they visit."""
        users = self.consenting("messages")
        if not office and not province:
            return users
        rows = {r["user_id"]: r for r in _rows(self.connect(), "SELECT f.user_id, f.office, o.province FROM oa_friends f "
                                                                "LEFT JOIN oa_offices o ON o.office = f.office")}
        return [u for u in users if u in rows and (not office or rows[u]["office"] == office)
                and (not province or rows[u]["province"] == province)]

    def preview_broadcast(self, office: str = "", province: str = "") -> dict:
        """Recipients and this month's quota, shown before sending."""
        limit, used = self.line.quota()
        n = len(self.audience(office, province))
        return {"recipients": n, "limit": limit, "used": used,
                "remaining": None if limit is None else limit - used,
                "fits": limit is None or used + n <= limit,
                "how": "narrowcast" if n >= NARROWCAST_MIN else "multicast"}

    def send_broadcast(self, text_th: str, text_en: str, office: str, province: str, by: str,
                       send_at_ms: int | None = None) -> dict:
        """Send now (or at `send_at_ms`) as multicasts of <= 500 to friends who agreed, narrowed
        to an office or province. Refused, nothing queued, when it would exceed the month's quota
        (checked again at a scheduled send). Returns the preview numbers and the broadcast id."""
        if not text_th.strip() or len(text_th) + len(text_en) > 4900:
            raise OaError("write the message (Thai, and English if you like; under 4,900 characters)")
        now = self.clock_ms()
        conn = self.connect()
        later = send_at_ms is not None and send_at_ms > now
        # an immediate send is 'sending' from the start, so the worker's timer never takes it too
        bid = conn.execute("INSERT INTO oa_broadcasts (text, office, province, send_at_ms, status, created_by, created_ms) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (dumps([text_th.strip(), text_en.strip()]), office, province, send_at_ms or now,
                            "scheduled" if later else "sending", by, now)).lastrowid
        if later:
            return dict(self.preview_broadcast(office, province), id=bid, scheduled=True)
        return self._dispatch(bid)

    def send_due_broadcasts(self) -> int:
        """Send scheduled broadcasts whose time has come (each checked against the quota)."""
        due = _rows(self.connect(), "SELECT id FROM oa_broadcasts WHERE status = 'scheduled' AND send_at_ms <= ?",
                    (self.clock_ms(),))
        for b in due:
            if not self.connect().execute("UPDATE oa_broadcasts SET status = 'sending' WHERE id = ? AND status = 'scheduled'",
                                          (b["id"],)).rowcount:
                continue  # another runner took it
            try:
                self._dispatch(b["id"])
            except OaError:
                pass  # refused: recorded with the numbers on the broadcast's row
        return len(due)

    def _dispatch(self, bid: int) -> dict:
        conn = self.connect()
        b = _one(conn, "SELECT * FROM oa_broadcasts WHERE id = ?", (bid,))
        text_th, text_en = json.loads(b["text"])
        p = self.preview_broadcast(b["office"], b["province"])
        if not p["fits"]:
            detail = (f"refused: {p['recipients']} recipients but only {p['remaining']} of {p['limit']} messages "
                      f"left this month ({p['used']} used)")
            conn.execute("UPDATE oa_broadcasts SET status = 'refused', recipients = ?, detail = ? WHERE id = ?",
                         (p["recipients"], detail, bid))
            raise OaError(detail)
        users = self.audience(b["office"], b["province"])
        conn.execute("UPDATE oa_broadcasts SET status = 'sent', recipients = ?, detail = ? WHERE id = ?",
                     (len(users), f"quota before: {p['used']}/{p['limit']}", bid))
        msgs = [M.text(text_th, text_en, [M.postback("หยุด Stop", "a=stop")])]
        # Never LINE's broadcast: it reaches every friend of the account, including people who never
        # agreed (or followed before the centre saw them), and the consent rule forbids that. A group
        # large enough for LINE's narrowcast goes to an uploaded audience of exactly the people who
        # agreed; a smaller one as multicasts.
        if len(users) >= NARROWCAST_MIN:
            self.queue_narrowcast(bid, users, msgs)
        elif users:
            self.queue_multicast(users, msgs, f"broadcast:{bid}")
        return dict(p, recipients=len(users), id=bid, scheduled=False,
                    how="narrowcast" if len(users) >= NARROWCAST_MIN else "multicast")

    def broadcasts(self) -> list[dict]:
        """Past and scheduled sends, newest first, each with its narrowcast's progress if it had one."""
        return _rows(self.connect(), """
            SELECT b.*, n.step, n.phase, n.target_count, n.success_count, n.failure_count, n.error_code, n.delivered,
                   n.error AS send_error FROM oa_broadcasts b LEFT JOIN oa_narrowcasts n ON n.broadcast_id = b.id
            ORDER BY b.id DESC LIMIT 100""")

    # ================================================================ narrowcast to an uploaded audience
    def queue_narrowcast(self, broadcast_id: int, users: list[str], msgs: list[dict]) -> int:
        """Queue a narrowcast of `msgs` to an audience of `users` (its retry key made now and reused
        on every attempt). The worker builds the audience, waits until LINE has it READY, sends, and
        follows the progress (`flush_narrowcasts`)."""
        now = self.clock_ms()
        nid = self.connect().execute(
            "INSERT INTO oa_narrowcasts (broadcast_id, users, messages, retry_key, step, next_ms, created_ms, updated_ms) "
            "VALUES (?, ?, ?, ?, 'audience', ?, ?, ?)",
            (broadcast_id, dumps(users), dumps(msgs[:5]), str(uuid.uuid4()), now, now, now)).lastrowid
        self.wake.set()
        return nid

    def flush_narrowcasts(self, limit: int = 20) -> int:
        """Move due narrowcasts one step on (audience → upload → send → track → done); returns how
        many were looked at. Errors LINE may recover from back off and retry with the same key."""
        with self.work_lock:
            due = _rows(self.connect(), "SELECT * FROM oa_narrowcasts WHERE step IN ('audience', 'upload', 'send', 'track') "
                                        "AND next_ms <= ? ORDER BY id LIMIT ?", (self.clock_ms(), limit))
            for nc in due:
                try:
                    self._narrowcast_step(nc)
                except LineError as exc:
                    attempts = nc["attempts"] + 1
                    if exc.retry and attempts < MAX_ATTEMPTS:
                        self._nc_update(nc["id"], attempts=attempts, error=str(exc)[:300],
                                        next_ms=self.clock_ms() + min(600_000, 1000 * 2 ** (attempts - 1)))
                    else:
                        self._nc_end(nc, "failed", attempts=attempts, error=str(exc)[:300])
            return len(due)

    def _nc_update(self, nid: int, **cols: Any) -> None:
        cols["updated_ms"] = self.clock_ms()
        self.connect().execute(f"UPDATE oa_narrowcasts SET {', '.join(k + ' = ?' for k in cols)} WHERE id = ?",
                               (*cols.values(), nid))

    def _nc_end(self, nc: dict, step: str, **cols: Any) -> None:
        """Finish a narrowcast (done or failed) and delete its audience: it served its one send, and
        LINE keeps only a limited number of audiences per account."""
        self._nc_update(nc["id"], step=step, **cols)
        if nc.get("audience_id"):
            try:
                self.line.delete_audience(nc["audience_id"])
            except LineError as exc:  # harmless: an unused audience, listed in LINE's console
                log.warning("could not delete audience %s: %s", nc["audience_id"], exc)

    def _narrowcast_step(self, nc: dict) -> None:
        now, step, users = self.clock_ms(), nc["step"], json.loads(nc["users"])
        if step == "audience":
            # consent is checked again now: someone who stopped since the send was queued is left out
            agreed = set(self.consenting("messages"))
            users = [u for u in users if u in agreed]
            if len(users) < NARROWCAST_MIN:
                if users:
                    self.queue_multicast(users, json.loads(nc["messages"]), f"broadcast:{nc['broadcast_id']}")
                self._nc_update(nc["id"], step="multicast", users=dumps(users), target_count=len(users))
                return
            aid = self.line.create_audience(f"skillspot news {nc['broadcast_id']}", users[:AUDIENCE_UPLOAD_MAX])
            self._nc_update(nc["id"], step="upload", users=dumps(users), audience_id=aid,
                            uploaded=min(len(users), AUDIENCE_UPLOAD_MAX), attempts=0, error=None, next_ms=now + POLL_MS)
        elif step == "upload":
            status, _count = self.line.audience_status(nc["audience_id"])
            if status == "IN_PROGRESS":
                self._nc_update(nc["id"], next_ms=now + POLL_MS)
            elif status != "READY":
                self._nc_end(nc, "failed", error=f"LINE's audience is {status}")
            elif nc["uploaded"] < len(users):
                # LINE takes one upload job per audience at a time: the next chunk after READY
                chunk = users[nc["uploaded"]:nc["uploaded"] + AUDIENCE_UPLOAD_MAX]
                self.line.add_to_audience(nc["audience_id"], chunk)
                self._nc_update(nc["id"], uploaded=nc["uploaded"] + len(chunk), attempts=0, next_ms=now + POLL_MS)
            else:
                self._nc_update(nc["id"], step="send", attempts=0, error=None)
                self._narrowcast_step(dict(nc, step="send", attempts=0))
        elif step == "send":
            res = self.line.narrowcast(nc["audience_id"], json.loads(nc["messages"]), nc["retry_key"])
            attempts = nc["attempts"] + 1
            if res.outcome == "sent":
                self._nc_update(nc["id"], step="track", request_id=res.value or None, attempts=0, error=None,
                                next_ms=now + POLL_MS)
            elif res.outcome == "retry" and attempts < MAX_ATTEMPTS:
                self._nc_update(nc["id"], attempts=attempts, error=f"HTTP {res.status} {res.detail}"[:300],
                                next_ms=now + min(600_000, 1000 * 2 ** (attempts - 1)))
            else:
                self._nc_end(nc, "failed", attempts=attempts, error=f"HTTP {res.status} {res.detail}"[:300])
        elif step == "track":
            if not nc["request_id"]:  # accepted earlier, but LINE did not name the request: nothing to follow
                self._nc_end(nc, "done")
                return
            p = self.line.narrowcast_progress(nc["request_id"])
            counts = {"phase": p["phase"], "target_count": p["target"], "success_count": p["success"],
                      "failure_count": p["failure"]}
            if p["phase"] in ("waiting", "sending"):
                self._nc_update(nc["id"], next_ms=now + POLL_MS, **counts)
            elif p["phase"] == "succeeded":
                try:
                    delivered = self.line.delivered(nc["request_id"])
                except LineError:
                    delivered = None  # LINE's statistics may come later; the progress counts stand
                self._nc_end(nc, "done", delivered=delivered, **counts)
            else:
                self._nc_end(nc, "failed", error_code=p["error_code"],
                             error=f"LINE errorCode {p['error_code']}: {p['failed_description'] or ''}"[:300], **counts)

    # ================================================================ charts
    def chart_trainees_vs_vacancies(self) -> list[dict]:
        """Per province and month: trainees by skill (attended) vs open vacancies by skill."""
        conn = self.connect()
        out: dict[tuple, dict] = {}
        for r in _rows(conn, """SELECT o.province, strftime('%Y-%m', a.at_ms / 1000, 'unixepoch', '+7 hours') AS month,
                                   c.skills, count(*) AS n FROM oa_attendance a JOIN oa_sessions s ON s.id = a.session_id
                                   JOIN oa_courses c ON c.id = s.course_id LEFT JOIN oa_offices o ON o.office = c.office
                                   GROUP BY 1, 2, 3"""):
            for sk in skills_of(r["skills"]):
                k = (r["province"] or "?", r["month"], sk)
                out.setdefault(k, {"trainees": 0, "vacancies": 0})["trainees"] += r["n"]
        for r in _rows(conn, """SELECT province, strftime('%Y-%m', created_ms / 1000, 'unixepoch', '+7 hours') AS month,
                                   skills, count(*) AS n FROM oa_vacancies WHERE status = 'open' GROUP BY 1, 2, 3"""):
            for sk in skills_of(r["skills"]):
                out.setdefault((r["province"], r["month"], sk), {"trainees": 0, "vacancies": 0})["vacancies"] += r["n"]
        return [{"province": k[0], "month": k[1], "skill": k[2], **v} for k, v in sorted(out.items())]
