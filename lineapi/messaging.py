"""Messaging API push (the DSD Official Account's welcome message), through line-bot-sdk v3.

LINE's retry rule: put an `X-Line-Retry-Key` on the first attempt, retry with the same key only
on 5xx or timeout, and read 409 as "already accepted" (success). The portal calls `push_text`
from a background thread, so the retries here never delay anyone's internet access.
"""
from __future__ import annotations

import time
import uuid

import urllib3
from linebot.v3.messaging import (ApiClient, ApiException, Configuration, MessagingApi,
                                  PushMessageRequest, TextMessage)

from lineapi.client import LineError
from base.config import LineConfig

MAX_ATTEMPTS = 3
BACKOFF_SECONDS = (0.5, 2.0)  # waits before the 2nd and 3rd attempts
MAX_TEXT = 5000  # LINE's limit for a text message, in characters


def push_text(cfg: LineConfig, user_id: str, text: str, retry_key: str | None = None) -> None:
    """Push one text message to `user_id` from the Official Account.

    `retry_key` (a hex UUID) is generated when not given; every attempt reuses it. Retries
    (MAX_ATTEMPTS in all) happen only after a 5xx or a timeout/connection failure; a 409 means
    LINE had already accepted a request with this key and counts as success. Raises LineError
    ("invalid" for 4xx or bad input, "server"/"timeout" when the last attempt failed that way).
    Reusing a key LINE already accepted (within 24 h) is a success that sends nothing.
    """
    if not cfg.messaging_access_token:
        raise LineError("invalid", "no Messaging API access token is configured ([line] messaging_access_token)")
    if not user_id:
        raise LineError("invalid", "no user ID to push to")
    if not text or len(text) > MAX_TEXT:
        raise LineError("invalid", f"the message text must be 1 to {MAX_TEXT} characters, not {len(text)}")
    key = retry_key or str(uuid.uuid4())
    try:
        uuid.UUID(key)
    except ValueError:
        raise LineError("invalid", "the retry key must be a hex UUID such as 123e4567-e89b-12d3-a456-426614174000") from None

    configuration = Configuration(access_token=cfg.messaging_access_token, host=cfg.messaging_base_url.rstrip("/"))
    # We retry ourselves (with the key); urllib3's own retries would resend without our say.
    configuration.retries = False
    request = PushMessageRequest(to=user_id, messages=[TextMessage(text=text)])
    last: LineError | None = None
    with ApiClient(configuration) as api_client:
        api = MessagingApi(api_client)
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])
            try:
                api.push_message(request, x_line_retry_key=key, _request_timeout=cfg.http_timeout_seconds)
                return
            except ApiException as exc:
                status = exc.status or 0
                if status == 409:
                    return  # this retry key was already accepted: the message is on its way
                if 500 <= status <= 599:
                    last = LineError("server", f"LINE answered the push with HTTP {status}", status=status)
                    continue
                if status == 0:  # the SDK's wrapper for transport problems (e.g. TLS)
                    last = LineError("server", "could not reach LINE for the push")
                    continue
                raise LineError("invalid", f"LINE rejected the push (HTTP {status}): {_detail(exc)}",
                                status=status) from None
            except urllib3.exceptions.TimeoutError:
                last = LineError("timeout", f"LINE did not answer the push within {cfg.http_timeout_seconds:g} s")
            except urllib3.exceptions.HTTPError as exc:
                last = LineError("server", f"could not reach LINE for the push ({type(exc).__name__})")
    assert last is not None
    raise LineError(last.kind, f"{last.message} (after {MAX_ATTEMPTS} attempts)", status=last.status)


def _detail(exc: ApiException) -> str:
    """LINE's `message` from an error body, bounded; never the request (it has the token)."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or exc.reason or "")
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200]
