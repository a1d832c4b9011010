"""The OA's messages, Thai first with English beneath (Flex bubbles, quick replies, postbacks).

Postback data is a short query string: a=<action> plus its arguments (see central/oa/service.py).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

BKK = dt.timezone(dt.timedelta(hours=7))


def when(ms: int) -> str:
    """A class time as a trainee reads it: Bangkok date and hours."""
    t = dt.datetime.fromtimestamp(ms / 1000, BKK)
    return t.strftime("%d/%m/%Y %H:%M")


def text(th: str, en: str, quick: list[dict] | None = None) -> dict:
    """A text message: Thai line, then English."""
    msg: dict[str, Any] = {"type": "text", "text": f"{th}\n{en}"[:5000]}
    if quick:
        msg["quickReply"] = {"items": quick[:13]}
    return msg


def postback(label: str, data: str, display: str | None = None) -> dict:
    """A quick-reply item that sends a postback (label <= 20 characters, LINE's limit)."""
    action: dict[str, Any] = {"type": "postback", "label": label[:20], "data": data}
    if display:
        action["displayText"] = display[:300]
    return {"type": "action", "action": action}


def consent_question() -> dict:
    return text("ยินดีต้อนรับสู่กรมพัฒนาฝีมือแรงงาน ต้องการรับข่าวสาร อบรม และตำแหน่งงานทาง LINE หรือไม่? "
                "(ยกเลิกได้ทุกเมื่อด้วยการแตะ 'หยุดรับข้อความ')",
                "Welcome to the Department of Skill Development. May we send you news, training and job "
                "messages? (Stop any time with one tap on 'Stop messages'.)",
                [postback("รับข่าวสาร Yes", "a=consent&k=messages&v=1", "รับข่าวสาร / Yes"),
                 postback("รับงานด้วย +Jobs", "a=consent&k=jobs&v=1", "รับข่าวงาน / Job messages too"),
                 postback("เช็คอินด้วยWiFi", "a=consent&k=auto_checkin&v=1",
                          "เช็คอินอัตโนมัติเมื่อใช้ WiFi ของสำนักงาน / Check me in when my phone uses the office WiFi"),
                 postback("ไม่รับ No", "a=consent&k=messages&v=0", "ไม่รับ / No")])


def courses_carousel(rows: list[dict]) -> dict:
    """Upcoming sessions as a Flex carousel, one bubble each, with a register button."""
    bubbles = []
    for r in rows[:10]:
        free = max(0, r["capacity"] - r["taken"])
        bubbles.append({
            "type": "bubble",
            "body": {"type": "box", "layout": "vertical", "spacing": "sm", "contents": [
                {"type": "text", "text": r["title_th"], "weight": "bold", "wrap": True},
                {"type": "text", "text": r["title_en"], "size": "sm", "color": "#555555", "wrap": True},
                {"type": "text", "text": f"{when(r['starts_ms'])} · {r['office']}", "size": "sm", "wrap": True},
                {"type": "text", "text": (f"ว่าง {free} ที่ / {free} seats left" if free
                                          else "เต็ม (ลงชื่อรอได้) / Full (waitlist)"), "size": "sm"}]},
            "footer": {"type": "box", "layout": "vertical", "contents": [
                {"type": "button", "style": "primary",
                 "action": {"type": "postback", "label": "ลงทะเบียน Register", "data": f"a=reg&s={r['session_id']}",
                            "displayText": f"ลงทะเบียน {r['title_th']}"}}]}})
    if not bubbles:
        return text("ยังไม่มีรอบอบรมที่เปิดรับ", "No training sessions are open right now.")
    return {"type": "flex", "altText": "หลักสูตรอบรม / Training courses",
            "contents": {"type": "carousel", "contents": bubbles}}


def confirmation(r: dict, status: str) -> dict:
    if status == "confirmed":
        th, en = "ลงทะเบียนสำเร็จ", "You are registered"
    else:
        th, en = f"รอบนี้เต็มแล้ว คุณอยู่ในรายชื่อรอลำดับที่ {r.get('position', '?')}", \
                 f"This session is full: you are number {r.get('position', '?')} on the waitlist"
    return {"type": "flex", "altText": f"{th} / {en}", "contents": {
        "type": "bubble",
        "body": {"type": "box", "layout": "vertical", "spacing": "sm", "contents": [
            {"type": "text", "text": th, "weight": "bold", "wrap": True},
            {"type": "text", "text": en, "size": "sm", "color": "#555555", "wrap": True},
            {"type": "text", "text": f"{r['title_th']} / {r['title_en']}", "wrap": True},
            {"type": "text", "text": f"{when(r['starts_ms'])} · {r['office']} {r.get('place') or ''}", "size": "sm",
             "wrap": True}]},
        "footer": {"type": "box", "layout": "vertical", "contents": [
            {"type": "button", "style": "secondary",
             "action": {"type": "postback", "label": "ยกเลิก Cancel", "data": f"a=cancel&s={r['session_id']}",
                        "displayText": "ยกเลิกการลงทะเบียน / Cancel"}}]}}}


def question(q: dict, n: int, total: int, token: str) -> dict:
    choices = q["choices"]
    return text(f"ข้อ {n}/{total}: {q['text_th']}", f"Question {n}/{total}: {q['text_en']}",
                [postback(c, f"a=ans&t={token}&q={q['id']}&c={i}", c) for i, c in enumerate(choices)])


# Made by central/oa/assets/make_richmenu.py from richmenu.html (2500x843, the areas below).
RICH_MENU_IMAGE = Path(__file__).resolve().parent.parent / "static" / "oa" / "richmenu.jpg"
RICH_MENU = {
    "size": {"width": 2500, "height": 843}, "selected": True, "name": "DSD main menu",
    "chatBarText": "เมนู Menu",
    "areas": [
        {"bounds": {"x": 0, "y": 0, "width": 625, "height": 843},
         "action": {"type": "postback", "label": "อบรม Courses", "data": "a=courses", "displayText": "หลักสูตร / Courses"}},
        {"bounds": {"x": 625, "y": 0, "width": 625, "height": 843},
         "action": {"type": "postback", "label": "ของฉัน Mine", "data": "a=mine", "displayText": "การลงทะเบียนของฉัน / My sessions"}},
        {"bounds": {"x": 1250, "y": 0, "width": 625, "height": 843},
         "action": {"type": "postback", "label": "งาน Jobs", "data": "a=jobs", "displayText": "ตำแหน่งงาน / Jobs"}},
        {"bounds": {"x": 1875, "y": 0, "width": 625, "height": 843},
         "action": {"type": "postback", "label": "หยุด Stop", "data": "a=stop", "displayText": "หยุดรับข้อความ / Stop messages"}},
    ]}
