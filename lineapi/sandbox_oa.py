"""The sandbox's Official Account side beyond push: signed webhook delivery (with redelivery),
reply, multicast, narrowcast (with uploaded audiences), broadcast, rich menus, the monthly quota,
narrowcast progress and message statistics.

Follows the Messaging API reference: webhook bodies are ``{"destination", "events"}`` signed
with ``X-Line-Signature`` = base64(HMAC-SHA256(channel secret, raw body)); every event has a
``webhookEventId`` (a ULID) and ``deliveryContext.isRedelivery``; a reply token works once and
for about a minute; push/multicast/narrowcast/broadcast honour ``X-Line-Retry-Key`` (24 h, a
repeat answers 409) and count once per recipient against the monthly quota (past it: 429 and
nothing is sent); a rich menu needs its image (``POST /v2/bot/richmenu/{id}/content``, JPEG or
PNG, <= 1 MB, once) before it can be linked.

Audiences and narrowcast, as LINE documents them: an audience for uploading user IDs takes <= 10,000
ids per JSON call (create: POST, add: PUT ``/v2/bot/audienceGroup/upload``), is ``IN_PROGRESS``
for ``audience_ready_s`` after each upload and ``READY`` after it (one upload job at a time per
audience: a PUT while one runs is refused); ``audienceCount`` counts the valid user ids. A
narrowcast is accepted with 202 and its progress (``GET /v2/bot/message/progress/narrowcast``)
goes ``waiting`` → ``sending`` → ``succeeded`` or ``failed``, one phase per ``narrowcast_step_s``;
it fails with ``errorCode`` 4 when an audience of fewer than 50 people is a condition of sending,
and 2 when no recipient is left (friends who blocked the account are not sent to). Messages reach
the users only when it succeeds. ``GET /v2/bot/insight/message/event`` gives ``overview.delivered``
for a narrowcast or broadcast (null until all is sent; the sandbox has no impressions or clicks,
so those are null). Using an audience that is not READY is refused with 400 (LINE does not
document this case; the sandbox is strict so a client that sends too early fails in tests).
Faults (``POST /sandbox/faults``) also apply to ``reply``, ``multicast``,
``narrowcast`` and ``broadcast``.

Sandbox-only paths:

* ``POST /sandbox/webhook`` ``{"url": ..., "redelivery": true|false}`` sets the bot's webhook URL.
* ``POST /sandbox/events`` ``{"type": "follow"|"unfollow"|"message"|"postback", "user_id", "text",
  "data"}``: the user does something; the event is delivered, answer ``{"event", "status"}``.
* ``GET /sandbox/sent``: every message the OA sent (reply, push, multicast, narrowcast,
  broadcast) with its recipients; ``GET /sandbox/webhook``: every delivery with its status.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, jsonify, request

from lineapi import endpoints

REPLY_TOKEN_TTL = 60.0  # LINE: use the reply token within about a minute
RICHMENU_SIZES = {(2500, 1686), (2500, 843), (1200, 810), (1200, 405), (800, 540), (800, 270)}
MULTICAST_MAX = 500
AUDIENCE_UPLOAD_MAX = 10_000   # user ids per JSON audience upload call
NARROWCAST_MIN_AUDIENCE = 50   # LINE: narrowcast progress errorCode 4 below this
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now: float) -> str:
    """A ULID (48-bit ms time + 80 random bits, Crockford base32), as LINE's webhookEventId."""
    value = (int(now * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def sign(secret: str, body: bytes) -> str:
    """LINE's X-Line-Signature for `body`."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass
class OaState:
    """The Official Account's part of the sandbox memory (guarded by SandboxState.lock)."""

    channel_secret: str = ""
    bot_user_id: str = field(default_factory=lambda: "U" + secrets.token_hex(16))
    webhook_url: str | None = None
    redelivery: bool = False
    quota_limit: int = 300
    quota_used: int = 0
    deliveries: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)        # events waiting for redelivery
    reply_tokens: dict[str, list] = field(default_factory=dict)  # token -> [user_id, issued, used]
    sent: list[dict] = field(default_factory=list)
    richmenus: dict[str, dict] = field(default_factory=dict)
    richmenu_images: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (content type, bytes)
    user_richmenu: dict[str, str] = field(default_factory=dict)
    default_richmenu: str | None = None
    audiences: dict[int, dict] = field(default_factory=dict)
    narrowcasts: dict[str, dict] = field(default_factory=dict)
    audience_ready_s: float = 1.0     # an upload job takes this long (sandbox clock)
    narrowcast_step_s: float = 1.0    # each narrowcast phase lasts this long (sandbox clock)
    ever_followed: set[str] = field(default_factory=set)

    def charge(self, recipients: int) -> bool:
        """Count `recipients` messages against the month's quota; False (nothing counted) if over."""
        if self.quota_used + recipients > self.quota_limit:
            return False
        self.quota_used += recipients
        return True

    def audience_status(self, audience: dict, now: float) -> str:
        """IN_PROGRESS while the last upload job runs, READY after."""
        return "READY" if now >= audience["ready_at"] else "IN_PROGRESS"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def advance(state: Any) -> None:
    """Move every narrowcast on to the phase its age says (waiting, sending, then succeeded or
    failed); a narrowcast that succeeds is delivered then, one that fails gives its quota back.
    Called (under no lock) whenever the sandbox is asked about narrowcasts or sent messages."""
    now = state.clock()
    with state.lock:
        oa = state.oa
        for rid, n in oa.narrowcasts.items():
            if n["phase"] in ("succeeded", "failed"):
                continue
            age = now - n["accepted"]
            if age < oa.narrowcast_step_s:
                continue
            if age < 2 * oa.narrowcast_step_s:
                n["phase"] = "sending"
                continue
            n["completed"] = n["accepted"] + 2 * oa.narrowcast_step_s
            if n["audience_size"] is not None and n["audience_size"] < NARROWCAST_MIN_AUDIENCE:
                n.update(phase="failed", errorCode=4, failedDescription="audience less than 50 recipients")
            elif not n["to"]:
                n.update(phase="failed", errorCode=2, failedDescription="not enough recipients")
            else:
                n["phase"] = "succeeded"
            if n["phase"] == "failed":
                oa.quota_used -= n["charged"]
                n["successCount"], n["failureCount"] = 0, 0
                continue
            delivered = [u for u in n["to"] if state.users.get(u) and state.users[u].is_friend]
            n["successCount"], n["failureCount"] = len(delivered), len(n["to"]) - len(delivered)
            oa.sent.append({"kind": "narrowcast", "request_id": rid, "to": n["to"], "retry_key": n["retry_key"],
                            "messages": n["messages"], "at": n["completed"], "delivered": delivered})


def _event(state: Any, kind: str, user_id: str, *, text: str | None = None, data: str | None = None,
           unblocked: bool = False) -> dict:
    now = state.clock()
    ev: dict[str, Any] = {"type": kind, "mode": "active", "timestamp": int(now * 1000),
                          "source": {"type": "user", "userId": user_id},
                          "webhookEventId": ulid(now), "deliveryContext": {"isRedelivery": False}}
    if kind in ("follow", "message", "postback"):
        token = secrets.token_hex(16)
        ev["replyToken"] = token
        with state.lock:
            state.oa.reply_tokens[token] = [user_id, now, False]
    if kind == "follow":
        ev["follow"] = {"isUnblocked": unblocked}
    elif kind == "message":
        ev["message"] = {"type": "text", "id": str(secrets.randbelow(10**18)), "text": text or "",
                         "quoteToken": secrets.token_urlsafe(16)}
    elif kind == "postback":
        ev["postback"] = {"data": data or ""}
    return ev


def deliver(state: Any, events: list[dict], *, redelivery: bool = False, timeout: float = 10.0) -> int:
    """POST `events` to the webhook URL, signed; the HTTP status (0: unreachable). A non-2xx
    answer keeps the events for `redeliver_failed` when redelivery is on, as LINE does."""
    with state.lock:
        url, secret = state.oa.webhook_url, state.oa.channel_secret
        bot = state.oa.bot_user_id
    if not url:
        raise RuntimeError("no webhook URL: POST /sandbox/webhook {\"url\": ...} first")
    evs = [dict(e, deliveryContext={"isRedelivery": redelivery}) for e in events]
    body = json.dumps({"destination": bot, "events": evs}, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        r = requests.post(url, data=body, timeout=timeout,
                          headers={"Content-Type": "application/json; charset=utf-8",
                                   "X-Line-Signature": sign(secret, body), "User-Agent": "LineBotWebhook/2.0"})
        status = r.status_code
    except requests.RequestException:
        status = 0
    with state.lock:
        state.oa.deliveries.append({"events": [e["webhookEventId"] for e in evs], "status": status,
                                    "redelivery": redelivery})
        if not 200 <= status < 300 and state.oa.redelivery:
            state.oa.failed.extend(events)
    return status


def user_event(state: Any, kind: str, user_id: str, **kw: Any) -> tuple[dict, int]:
    """The user acts (follow, unfollow, message, postback); the event is delivered. Following sets
    is_friend (and unblocking is reported as such); unfollowing clears it."""
    with state.lock:
        user = state.users.get(user_id)
        if user is None:
            raise ValueError(f"unknown sandbox user {user_id!r}")
        known = user_id in state.oa.ever_followed
        if kind == "follow":
            unblocked = known and not user.is_friend
            user.is_friend = True
            state.oa.ever_followed.add(user_id)
        elif kind == "unfollow":
            user.is_friend = False
            state.oa.ever_followed.add(user_id)
    if kind == "follow":
        kw["unblocked"] = unblocked
    ev = _event(state, kind, user_id, **kw)
    return ev, deliver(state, [ev])


def redeliver(state: Any, event: dict) -> int:
    """Deliver `event` again, identical but with isRedelivery=true."""
    return deliver(state, [event], redelivery=True)


def redeliver_failed(state: Any) -> list[int]:
    """Redeliver every event whose delivery failed (LINE retries when redelivery is on)."""
    with state.lock:
        pending, state.oa.failed = state.oa.failed, []
    return [deliver(state, [e], redelivery=True) for e in pending]


def add_messaging_routes(app: Flask, state: Any) -> None:
    """Register reply, multicast, narrowcast, broadcast, quota, rich menus and the sandbox-only paths."""
    from lineapi.sandbox import AUTH_FAILED, _fault_response, _is_uuid, _push_errors

    def auth() -> Any:
        a = request.headers.get("Authorization", "")
        if not a.startswith("Bearer ") or not hmac.compare_digest(a[7:].encode(), state.messaging_access_token.encode()):
            return jsonify({"message": AUTH_FAILED}), 401
        return None

    def bad(errors: list[tuple[str, str]]) -> Any:
        return jsonify({"message": f"The request body has {len(errors)} error(s)",
                        "details": [{"message": m, "property": p} for p, m in errors]}), 400

    def messages_errors(body: Any) -> list[tuple[str, str]]:
        if not isinstance(body, dict):
            return [("", "The request body must be a JSON object")]
        return [e for e in _push_errors(dict(body, to="U" + "0" * 32)) if e[0] != "to"]

    def bulk(kind: str, recipients_of: Any) -> Any:
        """Shared path of multicast/narrowcast/broadcast: auth, body, retry key, fault, quota."""
        problem = auth()
        if problem is not None:
            return problem
        body = request.get_json(silent=True)
        errors = messages_errors(body)
        recipients, more = recipients_of(body) if not errors else ([], [])
        errors += more
        if errors:
            return bad(errors)
        key = request.headers.get("X-Line-Retry-Key")
        if key is not None and not _is_uuid(key):
            return jsonify({"message": "The retry key must be a hexadecimal UUID"}), 400
        fault = state.take_fault(kind)
        if fault is not None:
            return _fault_response(state, fault)
        now, request_id = state.clock(), str(uuid.uuid4())
        with state.lock:
            if key is not None:
                seen = state.retry_keys.get(key.lower())
                if seen is not None and now - seen[0] < 86400:
                    resp = jsonify({"message": "The retry key is already accepted"})
                    resp.status_code = 409
                    resp.headers["x-line-accepted-request-id"] = seen[1]
                    return resp
            if not state.oa.charge(len(recipients)):
                return jsonify({"message": "You have reached your monthly limit."}), 429
            if key is not None:
                state.retry_keys[key.lower()] = (now, request_id, [])
            if kind == "narrowcast":
                # delivered only when its progress reaches `succeeded` (see advance)
                rec = body.get("recipient")
                audience = None if rec is None else state.oa.audiences.get(rec["audienceGroupId"])
                size = None if audience is None else len(audience["members"])
                state.oa.narrowcasts[request_id] = {"phase": "waiting", "accepted": now, "to": recipients,
                                                     "audience_size": size, "charged": len(recipients),
                                                     "retry_key": key, "messages": body["messages"]}
            else:
                state.oa.sent.append({"kind": kind, "request_id": request_id, "to": recipients, "retry_key": key,
                                      "messages": body["messages"], "at": now,
                                      "delivered": [u for u in recipients if state.users.get(u) and state.users[u].is_friend]})
        resp = jsonify({})
        resp.status_code = 202 if kind in ("narrowcast", "broadcast") else 200
        resp.headers["x-line-request-id"] = request_id
        return resp

    def friends() -> list[str]:
        with state.lock:
            return [u.user_id for u in state.users.values() if u.is_friend]

    @app.post(endpoints.REPLY)
    def reply() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        body = request.get_json(silent=True)
        errors = messages_errors(body)
        if errors:
            return bad(errors)
        fault = state.take_fault("reply")
        if fault is not None:
            return _fault_response(state, fault)
        token = body.get("replyToken")
        now = state.clock()
        with state.lock:
            entry = state.oa.reply_tokens.get(token) if isinstance(token, str) else None
            if entry is None or entry[2] or now - entry[1] > REPLY_TOKEN_TTL:
                return jsonify({"message": "Invalid reply token"}), 400
            entry[2] = True
            state.oa.sent.append({"kind": "reply", "request_id": str(uuid.uuid4()), "to": [entry[0]], "retry_key": None,
                                  "messages": body["messages"], "at": now, "delivered": [entry[0]]})
        return jsonify({"sentMessages": [{"id": str(secrets.randbelow(10**18))} for _ in body["messages"]]})

    @app.post(endpoints.MULTICAST)
    def multicast() -> Any:
        def recipients(body: dict) -> tuple[list[str], list]:
            to = body.get("to")
            if not isinstance(to, list) or not to or len(to) > MULTICAST_MAX \
                    or not all(isinstance(u, str) and re.fullmatch(r"U[0-9a-f]{32}", u) for u in to):
                return [], [("to", f"must be 1 to {MULTICAST_MAX} user IDs")]
            return list(dict.fromkeys(to)), []
        return bulk("multicast", recipients)

    @app.post(endpoints.BROADCAST)
    def broadcast() -> Any:
        return bulk("broadcast", lambda body: (friends(), []))

    @app.post(endpoints.NARROWCAST)
    def narrowcast() -> Any:
        def recipients(body: dict) -> tuple[list[str], list]:
            rec = body.get("recipient")
            if rec is None:
                return friends(), []
            if not isinstance(rec, dict) or rec.get("type") != "audience":
                return [], [("recipient", "the sandbox supports recipient type audience only")]
            with state.lock:
                audience = state.oa.audiences.get(rec.get("audienceGroupId"))
                ready = audience is not None and state.oa.audience_status(audience, state.clock()) == "READY"
            if audience is None:
                return [], [("recipient.audienceGroupId", "audience group not found")]
            if not ready:
                return [], [("recipient.audienceGroupId", "the audience is not READY yet")]
            fr = set(friends())
            return [u for u in audience["members"] if u in fr], []
        return bulk("narrowcast", recipients)

    @app.get(endpoints.NARROWCAST_PROGRESS)
    def narrowcast_progress() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        advance(state)
        with state.lock:
            n = state.oa.narrowcasts.get(request.args.get("requestId", ""))
            if n is None:
                return jsonify({"message": "Not found"}), 404
            out = {"phase": n["phase"], "acceptedTime": _iso(n["accepted"])}
            if n["phase"] in ("succeeded", "failed"):
                out.update(successCount=n["successCount"], failureCount=n["failureCount"], targetCount=len(n["to"]),
                           completedTime=_iso(n["completed"]))
            if n["phase"] == "failed":
                out.update(errorCode=n["errorCode"], failedDescription=n["failedDescription"])
        return jsonify(out)

    def audience_ids(body: dict) -> tuple[list[str], list[tuple[str, str]]]:
        items = body.get("audiences", [])
        if not isinstance(items, list) or len(items) > AUDIENCE_UPLOAD_MAX:
            return [], [("audiences", f"Size must be between 0 and {AUDIENCE_UPLOAD_MAX}")]
        # LINE counts the valid user ids of the audience (audienceCount)
        ids = [a.get("id") for a in items if isinstance(a, dict)]
        return [i for i in dict.fromkeys(ids) if isinstance(i, str) and re.fullmatch(r"U[0-9a-f]{32}", i)], []

    def audience_json(a: dict) -> dict:
        return {"audienceGroupId": a["id"], "type": "UPLOAD", "description": a["description"],
                "status": state.oa.audience_status(a, state.clock()), "audienceCount": len(a["members"]),
                "created": int(a["created"]), "permission": "READ_WRITE", "createRoute": "MESSAGING_API",
                "isIfaAudience": False}

    @app.post(endpoints.AUDIENCE_UPLOAD)
    def audience_upload() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("description"), str) \
                or not 1 <= len(body["description"]) <= 120:
            return bad([("description", "Length must be between 1 and 120")])
        ids, errors = audience_ids(body)
        if errors:
            return bad(errors)
        now = state.clock()
        with state.lock:
            gid = 10**12 + secrets.randbelow(9 * 10**12)  # LINE: a 13-digit number
            state.oa.audiences[gid] = {"id": gid, "description": body["description"], "members": ids, "created": now,
                                       "ready_at": now + state.oa.audience_ready_s}
            a = state.oa.audiences[gid]
            out = {k: v for k, v in audience_json(a).items() if k not in ("status", "audienceCount")}
        return jsonify(out), 202

    @app.put(endpoints.AUDIENCE_UPLOAD)
    def audience_add() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("audienceGroupId"), int):
            return bad([("audienceGroupId", "must be specified")])
        ids, errors = audience_ids(body)
        if errors or not ids:
            return bad(errors or [("audiences", "must contain at least one user id")])
        now = state.clock()
        with state.lock:
            a = state.oa.audiences.get(body["audienceGroupId"])
            if a is None:
                return jsonify({"message": "audience group not found"}), 404
            if state.oa.audience_status(a, now) != "READY":
                return jsonify({"message": "Another job for this audience is in progress"}), 400
            a["members"] = list(dict.fromkeys(a["members"] + ids))
            a["ready_at"] = now + state.oa.audience_ready_s
        return jsonify({}), 202

    @app.get(endpoints.AUDIENCE_GROUP)
    def audience_get(audience_group_id: int) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        with state.lock:
            a = state.oa.audiences.get(audience_group_id)
            if a is None:
                return jsonify({"message": "audience group not found"}), 400
            return jsonify({"audienceGroup": audience_json(a), "jobs": []})

    @app.delete(endpoints.AUDIENCE_GROUP)
    def audience_delete(audience_group_id: int) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        with state.lock:
            if state.oa.audiences.pop(audience_group_id, None) is None:
                return jsonify({"message": "audience group not found"}), 400
        return jsonify({})

    @app.get(endpoints.INSIGHT_MESSAGE_EVENT)
    def insight_message_event() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        advance(state)
        rid = request.args.get("requestId", "")
        with state.lock:
            sent = next((x for x in state.oa.sent if x["request_id"] == rid and x["kind"] in ("narrowcast", "broadcast")),
                        None)
            pending = rid in state.oa.narrowcasts and sent is None
        if sent is None and not pending:
            return jsonify({"message": "Not found"}), 404
        overview = {"requestId": rid, "timestamp": int(sent["at"]) if sent else None,
                    "delivered": len(sent["delivered"]) if sent else None, "uniqueImpression": None,
                    "uniqueClick": None, "uniqueMediaPlayed": None, "uniqueMediaPlayed100Percent": None}
        return jsonify({"overview": overview, "messages": [], "clicks": []})

    @app.get(endpoints.BOT_PROFILE)
    def bot_profile(user_id: str) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        with state.lock:
            user = state.users.get(user_id)
            # LINE: only users who are friends (or were, and have not blocked) have a profile here
            if user is None or not user.is_friend:
                return jsonify({"message": "Not found"}), 404
            body = {"userId": user.user_id, "displayName": user.display_name, "language": "th"}
            if user.picture_url:
                body["pictureUrl"] = user.picture_url
        return jsonify(body)

    @app.get(endpoints.QUOTA)
    def quota() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        return jsonify({"type": "limited", "value": state.oa.quota_limit})

    @app.get(endpoints.QUOTA_CONSUMPTION)
    def quota_consumption() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        return jsonify({"totalUsage": state.oa.quota_used})

    @app.post(endpoints.RICHMENU)
    def richmenu_create() -> Any:
        problem = auth()
        if problem is not None:
            return problem
        body = request.get_json(silent=True)
        errors: list[tuple[str, str]] = []
        if not isinstance(body, dict):
            return bad([("", "The request body must be a JSON object")])
        size = body.get("size") or {}
        if not isinstance(size, dict) or (size.get("width"), size.get("height")) not in RICHMENU_SIZES:
            errors.append(("size", "must be one of LINE's rich menu sizes, e.g. 2500x1686"))
        if not isinstance(body.get("selected"), bool):
            errors.append(("selected", "must be specified"))
        if not isinstance(body.get("name"), str) or not 1 <= len(body["name"]) <= 300:
            errors.append(("name", "Length must be between 1 and 300"))
        if not isinstance(body.get("chatBarText"), str) or not 1 <= len(body["chatBarText"]) <= 14:
            errors.append(("chatBarText", "Length must be between 1 and 14"))
        areas = body.get("areas")
        if not isinstance(areas, list) or not 1 <= len(areas) <= 20:
            errors.append(("areas", "Size must be between 1 and 20"))
        else:
            for i, a in enumerate(areas):
                if not isinstance(a, dict) or not isinstance(a.get("bounds"), dict) or not isinstance(a.get("action"), dict):
                    errors.append((f"areas[{i}]", "bounds and action must be specified"))
        if errors:
            return bad(errors)
        rid = "richmenu-" + secrets.token_hex(16)
        with state.lock:
            state.oa.richmenus[rid] = body
        return jsonify({"richMenuId": rid})

    @app.post(endpoints.RICHMENU_CONTENT)
    def richmenu_image(rich_menu_id: str) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        ctype = (request.content_type or "").split(";")[0].strip()
        data = request.get_data()
        if ctype not in ("image/jpeg", "image/png"):
            return jsonify({"message": "Content-Type must be image/jpeg or image/png"}), 400
        if not data or len(data) > 1024 * 1024:
            return jsonify({"message": "The image must be at most 1 MB"}), 400
        magic_ok = data.startswith(b"\xff\xd8") if ctype == "image/jpeg" else data.startswith(b"\x89PNG")
        if not magic_ok:
            return jsonify({"message": "The image is not a " + ctype}), 400
        with state.lock:
            if rich_menu_id not in state.oa.richmenus:
                return jsonify({"message": "richmenu not found"}), 404
            if rich_menu_id in state.oa.richmenu_images:
                # LINE: an image cannot be replaced; make a new rich menu
                return jsonify({"message": "An image has already been uploaded to the richmenu"}), 400
            state.oa.richmenu_images[rich_menu_id] = (ctype, len(data))
        return jsonify({})

    @app.post(endpoints.USER_RICHMENU_LINK)
    def richmenu_link(user_id: str, rich_menu_id: str) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        with state.lock:
            if rich_menu_id not in state.oa.richmenus:
                return jsonify({"message": "richmenu not found"}), 404
            if rich_menu_id not in state.oa.richmenu_images:
                return jsonify({"message": "must upload richmenu image before applying it to user"}), 400
            if user_id not in state.users:
                return jsonify({"message": "The user hasn't added the LINE Official Account as a friend."}), 400
            state.oa.user_richmenu[user_id] = rich_menu_id
        return jsonify({})

    @app.get(endpoints.USER_RICHMENU)
    def richmenu_of_user(user_id: str) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        with state.lock:
            rid = state.oa.user_richmenu.get(user_id) or state.oa.default_richmenu
        if rid is None:
            return jsonify({"message": "the user has no rich menu"}), 404
        return jsonify({"richMenuId": rid})

    @app.post(endpoints.DEFAULT_RICHMENU)
    def richmenu_default(rich_menu_id: str) -> Any:
        problem = auth()
        if problem is not None:
            return problem
        with state.lock:
            if rich_menu_id not in state.oa.richmenus:
                return jsonify({"message": "richmenu not found"}), 404
            if rich_menu_id not in state.oa.richmenu_images:
                return jsonify({"message": "must upload richmenu image before applying it to user"}), 400
            state.oa.default_richmenu = rich_menu_id
        return jsonify({})

    # -------------------------------------------------------------------- sandbox-only
    @app.post(endpoints.SANDBOX_WEBHOOK)
    def sandbox_webhook() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not body["url"].startswith("http"):
            return jsonify({"message": 'send {"url": "http://...", "redelivery": false}'}), 400
        with state.lock:
            state.oa.webhook_url = body["url"]
            state.oa.redelivery = bool(body.get("redelivery", False))
        return jsonify({"url": body["url"], "redelivery": state.oa.redelivery})

    @app.get(endpoints.SANDBOX_WEBHOOK)
    def sandbox_deliveries() -> Any:
        with state.lock:
            return jsonify({"url": state.oa.webhook_url, "deliveries": list(state.oa.deliveries)})

    @app.post(endpoints.SANDBOX_EVENTS)
    def sandbox_events() -> Any:
        body = request.get_json(silent=True) or {}
        kind = body.get("type")
        if kind not in ("follow", "unfollow", "message", "postback"):
            return jsonify({"message": "type must be follow, unfollow, message or postback"}), 400
        kw = {k: body[k] for k in ("text", "data") if isinstance(body.get(k), str)}
        try:
            ev, status = user_event(state, kind, str(body.get("user_id", "")), **kw)
        except (ValueError, RuntimeError) as exc:
            return jsonify({"message": str(exc)}), 400
        return jsonify({"event": ev, "status": status})

    @app.get(endpoints.SANDBOX_SENT)
    def sandbox_sent() -> Any:
        advance(state)
        with state.lock:
            return jsonify({"sent": list(state.oa.sent), "quota": {"limit": state.oa.quota_limit,
                                                                    "used": state.oa.quota_used}})


def sent_to(state: Any, user_id: str) -> list[dict]:
    """Every message (with its kind) the OA sent to `user_id`, pushes included, oldest first."""
    advance(state)
    with state.lock:
        return [dict(m, kind=s["kind"], retry_key=s["retry_key"]) for s in state.oa.sent if user_id in s["to"]
                for m in s["messages"]]
