"""The LINE sandbox's Official Account side, as LINE documents it: signed webhooks (checked
with line-bot-sdk's own validator), reply tokens, multicast/narrowcast/broadcast with retry keys
and the monthly quota, rich menus, 429 on demand."""
from __future__ import annotations

import json
import threading
import uuid

import requests
from flask import Flask, request
from linebot.v3 import SignatureValidator
from werkzeug.serving import make_server

from lineapi import sandbox_oa
from lineapi.sandbox import SandboxUser, default_users
from lineapi.testing import FakeClock, running_sandbox

SOMCHAI, MALEE, NIRAN = (u.user_id for u in default_users())
SECRET = "00112233445566778899aabbccddeeff"
TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def receiver() -> tuple[Flask, list]:
    got: list = []
    app = Flask("receiver")

    @app.post("/hook")
    def hook():
        got.append((request.get_data(), request.headers.get("X-Line-Signature")))
        return "", 200
    return app, got


def test_webhook_delivery_is_signed_and_redelivery_keeps_the_event_id():
    app, got = receiver()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        with running_sandbox(channel_id="1", channel_secret="f" * 32, messaging_channel_secret=SECRET,
                             messaging_access_token=TOKEN) as sb:
            r = requests.post(sb.url + "/sandbox/webhook", json={"url": f"http://127.0.0.1:{server.port}/hook"}, timeout=5)
            assert r.status_code == 200
            r = requests.post(sb.url + "/sandbox/events", json={"type": "follow", "user_id": MALEE}, timeout=5)
            ev = r.json()["event"]
            assert r.json()["status"] == 200 and ev["follow"] == {"isUnblocked": False}
            assert len(ev["webhookEventId"]) == 26 and ev["deliveryContext"] == {"isRedelivery": False}
            sandbox_oa.user_event(sb.state, "unfollow", MALEE)
            again, _ = sandbox_oa.user_event(sb.state, "follow", MALEE)
            assert again["follow"] == {"isUnblocked": True}
            assert sandbox_oa.redeliver(sb.state, ev) == 200
            validator = SignatureValidator(SECRET)
            bodies = [json.loads(b) for b, _ in got]
            assert all(validator.validate(b.decode(), s) for b, s in got)
            assert not SignatureValidator("0" * 32).validate(got[0][0].decode(), got[0][1])
            last = bodies[-1]["events"][0]
            assert last["webhookEventId"] == ev["webhookEventId"] and last["deliveryContext"]["isRedelivery"] is True
            assert [e["type"] for b in bodies for e in b["events"]] == ["follow", "unfollow", "follow", "follow"]
            assert "replyToken" not in bodies[1]["events"][0]  # unfollow has no reply token
    finally:
        server.shutdown()
        server.server_close()


def test_reply_token_works_once_and_for_a_minute():
    clock = FakeClock(1_800_000_000)
    with running_sandbox(channel_id="1", channel_secret="f" * 32, messaging_access_token=TOKEN, clock=clock) as sb:
        sb.state.oa.webhook_url = "http://127.0.0.1:9/nowhere"  # delivery fails; the token is still issued
        ev, status = sandbox_oa.user_event(sb.state, "message", SOMCHAI, text="hi")
        assert status == 0
        msg = {"type": "text", "text": "สวัสดี"}
        ok = requests.post(sb.url + "/v2/bot/message/reply", json={"replyToken": ev["replyToken"], "messages": [msg]},
                           headers=AUTH, timeout=5)
        assert ok.status_code == 200
        twice = requests.post(sb.url + "/v2/bot/message/reply", json={"replyToken": ev["replyToken"], "messages": [msg]},
                              headers=AUTH, timeout=5)
        assert twice.status_code == 400 and twice.json()["message"] == "Invalid reply token"
        ev2, _ = sandbox_oa.user_event(sb.state, "postback", SOMCHAI, data="a=x")
        clock.advance(61)
        late = requests.post(sb.url + "/v2/bot/message/reply", json={"replyToken": ev2["replyToken"], "messages": [msg]},
                             headers=AUTH, timeout=5)
        assert late.status_code == 400
        assert requests.post(sb.url + "/v2/bot/message/reply", json={"replyToken": "x", "messages": [msg]},
                             headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        assert sb.state.oa.quota_used == 0  # replies are free


def test_bulk_sends_retry_keys_quota_and_429():
    clock = FakeClock(1_764_800_000.0)
    with running_sandbox(channel_id="1", channel_secret="f" * 32, messaging_access_token=TOKEN, message_quota=5,
                         clock=clock) as sb:
        msg = {"type": "text", "text": "ข่าว"}
        key = str(uuid.uuid4())
        r = requests.post(sb.url + "/v2/bot/message/multicast", json={"to": [SOMCHAI, MALEE], "messages": [msg]},
                          headers={**AUTH, "X-Line-Retry-Key": key}, timeout=5)
        assert r.status_code == 200
        r = requests.post(sb.url + "/v2/bot/message/multicast", json={"to": [SOMCHAI, MALEE], "messages": [msg]},
                          headers={**AUTH, "X-Line-Retry-Key": key}, timeout=5)
        assert r.status_code == 409
        assert requests.get(sb.url + "/v2/bot/message/quota/consumption", headers=AUTH, timeout=5).json() == {"totalUsage": 2}
        assert requests.get(sb.url + "/v2/bot/message/quota", headers=AUTH, timeout=5).json() == {"type": "limited", "value": 5}
        bad = requests.post(sb.url + "/v2/bot/message/multicast", json={"to": ["nobody"], "messages": [msg]},
                            headers=AUTH, timeout=5)
        assert bad.status_code == 400 and bad.json()["details"][0]["property"] == "to"
        # a narrowcast to an audience under 50 people is accepted, then fails (LINE's errorCode 4):
        # nothing delivered, the quota given back
        clock.advance(5)  # past any upload job
        g = requests.post(sb.url + "/v2/bot/audienceGroup/upload",
                          json={"description": "Lampang", "audiences": [{"id": SOMCHAI}, {"id": NIRAN}]},
                          headers=AUTH, timeout=5).json()["audienceGroupId"]
        clock.advance(1)
        r = requests.post(sb.url + "/v2/bot/message/narrowcast",
                          json={"messages": [msg], "recipient": {"type": "audience", "audienceGroupId": g}},
                          headers={**AUTH, "X-Line-Retry-Key": str(uuid.uuid4())}, timeout=5)
        assert r.status_code == 202 and sb.state.oa.quota_used == 3  # Niran, the only friend, counted
        clock.advance(2)
        prog = requests.get(sb.url + "/v2/bot/message/progress/narrowcast",
                            params={"requestId": r.headers["x-line-request-id"]}, headers=AUTH, timeout=5).json()
        assert prog["phase"] == "failed" and prog["errorCode"] == 4 and prog["successCount"] == 0
        assert sb.state.oa.quota_used == 2
        r = requests.post(sb.url + "/v2/bot/message/multicast", json={"to": [SOMCHAI, MALEE], "messages": [msg]},
                          headers=AUTH, timeout=5)
        assert r.status_code == 200 and sb.state.oa.quota_used == 4
        # over the quota: 429, nothing sent, nothing counted
        r = requests.post(sb.url + "/v2/bot/message/multicast", json={"to": [SOMCHAI, MALEE, NIRAN], "messages": [msg]},
                          headers=AUTH, timeout=5)
        assert r.status_code == 429 and "monthly limit" in r.json()["message"]
        assert sb.state.oa.quota_used == 4
        # 429 on demand (rate limit)
        sb.state.add_fault("broadcast", "429")
        assert requests.post(sb.url + "/v2/bot/message/broadcast", json={"messages": [msg]}, headers=AUTH,
                             timeout=5).status_code == 429
        assert requests.post(sb.url + "/v2/bot/message/broadcast", json={"messages": [msg]}, headers=AUTH,
                             timeout=5).status_code == 202
        assert [s["kind"] for s in sb.state.oa.sent] == ["multicast", "multicast", "broadcast"]


def test_audiences_narrowcast_progress_and_statistics():
    """LINE's audience life cycle (IN_PROGRESS → READY, one upload job at a time, <= 10,000 ids a
    call), narrowcast phases (waiting → sending → succeeded), delivery only on success, blocked
    friends not sent to, and the message statistics."""
    clock = FakeClock(1_764_800_000.0)
    people = [SandboxUser("U" + uuid.uuid4().hex, f"P{i}", None, is_friend=i != 0) for i in range(60)]
    with running_sandbox(channel_id="1", channel_secret="f" * 32, messaging_access_token=TOKEN, message_quota=1000,
                         clock=clock) as sb:
        for p in people:
            sb.state.put_user(p)
        up = sb.url + "/v2/bot/audienceGroup/upload"
        assert requests.post(up, json={"description": "x" * 121, "audiences": []}, headers=AUTH, timeout=5).status_code == 400
        too_many = [{"id": "U" + uuid.uuid4().hex} for _ in range(10_001)]
        assert requests.post(up, json={"description": "big", "audiences": too_many}, headers=AUTH,
                             timeout=5).status_code == 400
        r = requests.post(up, json={"description": "Lampang", "audiences": [{"id": p.user_id} for p in people[:40]]
                                    + [{"id": "not-a-user-id"}]}, headers=AUTH, timeout=5)
        assert r.status_code == 202
        g = r.json()["audienceGroupId"]
        info = requests.get(f"{sb.url}/v2/bot/audienceGroup/{g}", headers=AUTH, timeout=5).json()["audienceGroup"]
        assert info["status"] == "IN_PROGRESS" and info["audienceCount"] == 40  # the bad id is not counted
        msg = {"type": "text", "text": "ข่าว"}
        body = {"messages": [msg], "recipient": {"type": "audience", "audienceGroupId": g}}
        # not READY: refused; adding while the upload job runs: refused
        assert requests.post(sb.url + "/v2/bot/message/narrowcast", json=body, headers=AUTH, timeout=5).status_code == 400
        more = {"audienceGroupId": g, "audiences": [{"id": p.user_id} for p in people[40:]]}
        assert requests.put(up, json=more, headers=AUTH, timeout=5).status_code == 400
        clock.advance(1)
        assert requests.put(up, json=more, headers=AUTH, timeout=5).status_code == 202
        info = requests.get(f"{sb.url}/v2/bot/audienceGroup/{g}", headers=AUTH, timeout=5).json()["audienceGroup"]
        assert info["status"] == "IN_PROGRESS" and info["audienceCount"] == 60
        clock.advance(1)
        key = str(uuid.uuid4())
        r = requests.post(sb.url + "/v2/bot/message/narrowcast", json=body, headers={**AUTH, "X-Line-Retry-Key": key},
                          timeout=5)
        assert r.status_code == 202
        rid = r.headers["x-line-request-id"]
        again = requests.post(sb.url + "/v2/bot/message/narrowcast", json=body,
                              headers={**AUTH, "X-Line-Retry-Key": key}, timeout=5)
        assert again.status_code == 409 and again.headers["x-line-accepted-request-id"] == rid
        assert sb.state.oa.quota_used == 59  # the friends among the 60

        def progress() -> dict:
            return requests.get(sb.url + "/v2/bot/message/progress/narrowcast", params={"requestId": rid},
                                headers=AUTH, timeout=5).json()
        assert progress()["phase"] == "waiting" and "successCount" not in progress()
        stats = requests.get(sb.url + "/v2/bot/insight/message/event", params={"requestId": rid}, headers=AUTH,
                             timeout=5).json()
        assert stats["overview"]["delivered"] is None  # not all sent yet
        assert sandbox_oa.sent_to(sb.state, people[1].user_id) == []
        clock.advance(1)
        assert progress()["phase"] == "sending"
        sb.state.users[people[2].user_id].is_friend = False  # blocks the account while it is being sent
        clock.advance(1)
        p = progress()
        assert p["phase"] == "succeeded" and p["targetCount"] == 59 and p["successCount"] == 58 and p["failureCount"] == 1
        assert "completedTime" in p and "errorCode" not in p
        assert sandbox_oa.sent_to(sb.state, people[1].user_id)[0]["text"] == "ข่าว"
        assert sandbox_oa.sent_to(sb.state, people[0].user_id) == []  # never a friend
        stats = requests.get(sb.url + "/v2/bot/insight/message/event", params={"requestId": rid}, headers=AUTH,
                             timeout=5).json()
        assert stats["overview"]["delivered"] == 58 and stats["overview"]["uniqueImpression"] is None
        assert requests.get(sb.url + "/v2/bot/insight/message/event", params={"requestId": "nope"}, headers=AUTH,
                            timeout=5).status_code == 404
        assert requests.delete(f"{sb.url}/v2/bot/audienceGroup/{g}", headers=AUTH, timeout=5).status_code == 200
        assert requests.get(f"{sb.url}/v2/bot/audienceGroup/{g}", headers=AUTH, timeout=5).status_code == 400


def test_rich_menus():
    with running_sandbox(channel_id="1", channel_secret="f" * 32, messaging_access_token=TOKEN) as sb:
        from central.oa.messages import RICH_MENU
        bad = requests.post(sb.url + "/v2/bot/richmenu", json=dict(RICH_MENU, size={"width": 10, "height": 10}),
                            headers=AUTH, timeout=5)
        assert bad.status_code == 400 and bad.json()["details"][0]["property"] == "size"
        rid = requests.post(sb.url + "/v2/bot/richmenu", json=RICH_MENU, headers=AUTH, timeout=5).json()["richMenuId"]
        assert rid.startswith("richmenu-")
        assert requests.post(f"{sb.url}/v2/bot/user/{MALEE}/richmenu/richmenu-{'0' * 32}", headers=AUTH,
                             timeout=5).status_code == 404
        assert requests.get(f"{sb.url}/v2/bot/user/{MALEE}/richmenu", headers=AUTH, timeout=5).status_code == 404
        # LINE links no rich menu before its image is uploaded
        r = requests.post(f"{sb.url}/v2/bot/user/{MALEE}/richmenu/{rid}", headers=AUTH, timeout=5)
        assert r.status_code == 400 and "image" in r.json()["message"]
        from central.oa.messages import RICH_MENU_IMAGE
        jpeg = RICH_MENU_IMAGE.read_bytes()
        assert requests.post(f"{sb.url}/v2/bot/richmenu/{rid}/content", data=b"GIF89a", headers={**AUTH, "Content-Type": "image/jpeg"},
                             timeout=5).status_code == 400
        assert requests.post(f"{sb.url}/v2/bot/richmenu/{rid}/content", data=jpeg, headers={**AUTH, "Content-Type": "image/jpeg"},
                             timeout=5).status_code == 200
        assert requests.post(f"{sb.url}/v2/bot/richmenu/{rid}/content", data=jpeg, headers={**AUTH, "Content-Type": "image/jpeg"},
                             timeout=5).status_code == 400  # only once
        assert requests.post(f"{sb.url}/v2/bot/user/{MALEE}/richmenu/{rid}", headers=AUTH, timeout=5).status_code == 200
        assert requests.get(f"{sb.url}/v2/bot/user/{MALEE}/richmenu", headers=AUTH, timeout=5).json() == {"richMenuId": rid}
