"""Talking to LINE's Messaging API through line-bot-sdk v3 (the sandbox in tests).

Pushes and multicasts go through the outbox table, narrowcasts through oa_narrowcasts (both in
central/oa/service.py): the retry key is made
when a message is queued and every attempt reuses it. A 5xx or a timeout is retried with the
same key; a 409 means LINE had already accepted the key (success); a 429 backs off
exponentially; any other 4xx is final.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3
from linebot.v3 import audience as la
from linebot.v3 import insight as li
from linebot.v3.messaging import (ApiClient, ApiException, Configuration, MessagingApi, MessagingApiBlob,
                                  MulticastRequest, NarrowcastRequest, PushMessageRequest, ReplyMessageRequest,
                                  RichMenuRequest)

# each line-bot-sdk module (messaging, audience, insight) has its own exception class
_API_ERRORS = (ApiException, la.ApiException, li.ApiException)


@dataclass
class SendResult:
    """What one attempt came to: 'sent', 'retry' (5xx/timeout/429, same key later) or 'failed'."""

    outcome: str
    status: int
    detail: str = ""
    value: Any = None  # what the call returned, when it was sent


class LineError(Exception):
    """A call LINE refused or that did not get through; `retry` says whether trying later may help."""

    def __init__(self, status: int, detail: str, retry: bool) -> None:
        super().__init__(f"HTTP {status} {detail}".strip())
        self.status, self.detail, self.retry = status, detail, retry


class LineClient:
    """One Messaging API channel: access token + host."""

    def __init__(self, access_token: str, host: str, timeout_s: float) -> None:
        self.configuration = Configuration(access_token=access_token, host=host.rstrip("/"))
        self.configuration.retries = False  # we retry ourselves, with the retry key
        # audiences and insight are separate line-bot-sdk modules, each with its own configuration
        self.audience_configuration = la.Configuration(access_token=access_token, host=host.rstrip("/"))
        self.insight_configuration = li.Configuration(access_token=access_token, host=host.rstrip("/"))
        self.timeout_s = timeout_s

    def _call(self, fn: Any) -> SendResult:
        with ApiClient(self.configuration) as client:
            try:
                return SendResult("sent", 200, value=fn(MessagingApi(client)))
            except ApiException as exc:
                status = exc.status or 0
                body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
                if status == 409:
                    # the request LINE accepted the first time is named in this header
                    accepted = (exc.headers or {}).get("x-line-accepted-request-id", "")
                    return SendResult("sent", 409, "already accepted with this retry key", value=accepted)
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

    def narrowcast(self, audience_group_id: int, messages: list[dict], retry_key: str) -> SendResult:
        """Narrowcast to an uploaded audience with `retry_key`; `value` is LINE's request id
        (for the progress and the statistics), also on a 409 (the first accepted request's)."""
        req = NarrowcastRequest.from_dict({"messages": messages,
                                           "recipient": {"type": "audience", "audienceGroupId": audience_group_id}})
        res = self._call(lambda api: api.narrowcast_with_http_info(req, x_line_retry_key=retry_key,
                                                                   _request_timeout=self.timeout_s))
        if res.outcome == "sent" and res.status != 409:
            res.value = (res.value.headers or {}).get("x-line-request-id", "")
        return res

    def _guarded(self, fn: Any) -> Any:
        """Run one audience/insight/progress call; LINE's refusals become LineError."""
        try:
            return fn()
        except _API_ERRORS as exc:
            status = exc.status or 0
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            raise LineError(status, body[:200], status == 429 or status >= 500 or status == 0) from None
        except urllib3.exceptions.HTTPError as exc:
            raise LineError(0, type(exc).__name__, True) from None

    def create_audience(self, description: str, user_ids: list[str]) -> int:
        """Create an audience for uploading user IDs (<= 10,000 in this call); its audienceGroupId."""
        req = la.CreateAudienceGroupRequest.from_dict({"description": description[:120], "isIfaAudience": False,
                                                       "audiences": [{"id": u} for u in user_ids]})
        with la.ApiClient(self.audience_configuration) as client:
            return int(self._guarded(lambda: la.ManageAudience(client).create_audience_group(
                req, _request_timeout=self.timeout_s)).audience_group_id)

    def add_to_audience(self, audience_group_id: int, user_ids: list[str]) -> None:
        """Add <= 10,000 more user IDs to an uploaded audience (LINE takes one job at a time)."""
        req = la.AddAudienceToAudienceGroupRequest.from_dict({"audienceGroupId": audience_group_id,
                                                              "audiences": [{"id": u} for u in user_ids]})
        with la.ApiClient(self.audience_configuration) as client:
            self._guarded(lambda: la.ManageAudience(client).add_audience_to_audience_group(
                req, _request_timeout=self.timeout_s))

    def audience_status(self, audience_group_id: int) -> tuple[str, int]:
        """(status: IN_PROGRESS, READY, FAILED, EXPIRED, ..., audienceCount) of an audience."""
        with la.ApiClient(self.audience_configuration) as client:
            g = self._guarded(lambda: la.ManageAudience(client).get_audience_data(
                audience_group_id, _request_timeout=self.timeout_s)).audience_group
        return str(getattr(g.status, "value", g.status)), int(g.audience_count or 0)

    def delete_audience(self, audience_group_id: int) -> None:
        """Delete an audience that is no longer needed (LINE keeps a limited number per account)."""
        with la.ApiClient(self.audience_configuration) as client:
            self._guarded(lambda: la.ManageAudience(client).delete_audience_group(
                audience_group_id, _request_timeout=self.timeout_s))

    def narrowcast_progress(self, request_id: str) -> dict:
        """LINE's progress of a narrowcast: phase (waiting, sending, succeeded, failed), counts,
        errorCode and failedDescription when it failed."""
        with ApiClient(self.configuration) as client:
            p = self._guarded(lambda: MessagingApi(client).get_narrowcast_progress(
                request_id, _request_timeout=self.timeout_s))
        return {"phase": p.phase, "success": p.success_count, "failure": p.failure_count, "target": p.target_count,
                "error_code": p.error_code, "failed_description": p.failed_description}

    def delivered(self, request_id: str) -> int | None:
        """Messages delivered for a narrowcast/broadcast request (LINE's statistics; None while
        LINE has none yet)."""
        with li.ApiClient(self.insight_configuration) as client:
            ev = self._guarded(lambda: li.Insight(client).get_message_event(request_id, _request_timeout=self.timeout_s))
        return None if ev.overview is None else ev.overview.delivered

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
