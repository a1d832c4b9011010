"""Talking to LINE's Messaging API through line-bot-sdk v3 (the sandbox in tests).

Pushes and multicasts go through the outbox table (central/oa/store.py): the retry key is made
when a message is queued and every attempt reuses it. A 5xx or a timeout is retried with the
same key; a 409 means LINE had already accepted the key (success); a 429 backs off
exponentially; any other 4xx is final.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3
from linebot.v3.messaging import (ApiClient, ApiException, Configuration, MessagingApi, MessagingApiBlob,
                                  MulticastRequest, PushMessageRequest, ReplyMessageRequest, RichMenuRequest)


@dataclass
class SendResult:
    """What one attempt came to: 'sent', 'retry' (5xx/timeout/429, same key later) or 'failed'."""

    outcome: str
    status: int
    detail: str = ""


class LineClient:
    """One Messaging API channel: access token + host."""

    def __init__(self, access_token: str, host: str, timeout_s: float) -> None:
        self.configuration = Configuration(access_token=access_token, host=host.rstrip("/"))
        self.configuration.retries = False  # we retry ourselves, with the retry key
        self.timeout_s = timeout_s

    def _call(self, fn: Any) -> SendResult:
        with ApiClient(self.configuration) as client:
            try:
                fn(MessagingApi(client))
                return SendResult("sent", 200)
            except ApiException as exc:
                status = exc.status or 0
                body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
                if status == 409:
                    return SendResult("sent", 409, "already accepted with this retry key")
                if status == 429 or status >= 500 or status == 0:
                    return SendResult("retry", status, body[:200])
                return SendResult("failed", status, body[:200])
            except urllib3.exceptions.HTTPError as exc:
                return SendResult("retry", 0, type(exc).__name__)

    def reply(self, reply_token: str, messages: list[dict]) -> SendResult:
        """Reply (free, once per token, within about a minute)."""
        req = ReplyMessageRequest.from_dict({"replyToken": reply_token, "messages": messages})
        return self._call(lambda api: api.reply_message(req, _request_timeout=self.timeout_s))

    def push(self, to: str, messages: list[dict], retry_key: str) -> SendResult:
        """Push with `retry_key` (the same on every attempt)."""
        req = PushMessageRequest.from_dict({"to": to, "messages": messages})
        return self._call(lambda api: api.push_message(req, x_line_retry_key=retry_key, _request_timeout=self.timeout_s))

    def multicast(self, to: list[str], messages: list[dict], retry_key: str) -> SendResult:
        """Multicast (<= 500 users a call) with `retry_key`."""
        req = MulticastRequest.from_dict({"to": to, "messages": messages})
        return self._call(lambda api: api.multicast(req, x_line_retry_key=retry_key, _request_timeout=self.timeout_s))

    def display_name(self, user_id: str) -> str:
        """The user's LINE display name ('' when LINE has no profile for them or is unreachable)."""
        with ApiClient(self.configuration) as client:
            try:
                return MessagingApi(client).get_profile(user_id, _request_timeout=self.timeout_s).display_name or ""
            except (ApiException, urllib3.exceptions.HTTPError):
                return ""

    def quota(self) -> tuple[int | None, int]:
        """(monthly limit or None when unlimited, used this month)."""
        with ApiClient(self.configuration) as client:
            api = MessagingApi(client)
            q = api.get_message_quota(_request_timeout=self.timeout_s)
            used = api.get_message_quota_consumption(_request_timeout=self.timeout_s).total_usage
        return (q.value if q.type == "limited" else None), int(used or 0)

    def create_rich_menu(self, menu: dict, image: bytes, content_type: str) -> str:
        """Create a rich menu and upload its image (api-data host; LINE links none without one); its id."""
        with ApiClient(self.configuration) as client:
            rid = MessagingApi(client).create_rich_menu(RichMenuRequest.from_dict(menu),
                                                        _request_timeout=self.timeout_s).rich_menu_id
            MessagingApiBlob(client).set_rich_menu_image(rid, image, _headers={"Content-Type": content_type},
                                                         _request_timeout=self.timeout_s)
        return rid

    def link_rich_menu(self, user_id: str, rich_menu_id: str) -> SendResult:
        """Show `rich_menu_id` to `user_id`."""
        return self._call(lambda api: api.link_rich_menu_id_to_user(user_id, rich_menu_id,
                                                                    _request_timeout=self.timeout_s))


def dumps(obj: Any) -> str:
    """Compact JSON with Thai kept readable."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
