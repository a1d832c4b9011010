"""Messaging API push (the DSD Official Account's welcome message): one HTTPS POST with requests.

LINE's retry rule: put an `X-Line-Retry-Key` on the first attempt, retry with the same key only
on 5xx or timeout, and read 409 as "already accepted" (success). The portal calls `push_text`
from a background thread, so the retries here never delay anyone's internet access.

This was line-bot-sdk v3 until the footprint work: its generated client is about 60 MB of
modules, loaded into a portal worker by the first welcome push and kept for the worker's life,
for one POST of a small JSON body. The centre, which uses most of the Messaging API, keeps the
SDK (the `central` extra); the box does not install it.
"""
from __future__ import annotations

import time
import uuid

import requests

from base.config import LineConfig
from lineapi import endpoints
from lineapi.client import LineError

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

    url = endpoints.join(cfg.messaging_base_url, endpoints.PUSH)
    payload = {"to": user_id, "messages": [{"type": "text", "text": text}]}
    headers = {"Authorization": f"Bearer {cfg.messaging_access_token}", "X-Line-Retry-Key": key}
    last: LineError | None = None
    with requests.Session() as http:
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])
            try:
                resp = http.post(url, json=payload, headers=headers, timeout=cfg.http_timeout_seconds)
            except requests.Timeout:
                last = LineError("timeout", f"LINE did not answer the push within {cfg.http_timeout_seconds:g} s")
                continue
            except requests.RequestException as exc:
                last = LineError("server", f"could not reach LINE for the push ({type(exc).__name__})")
                continue
            status = resp.status_code
            if status == 200 or status == 409:
                return  # 409: this retry key was already accepted, the message is on its way
            if 500 <= status <= 599:
                last = LineError("server", f"LINE answered the push with HTTP {status}", status=status)
                continue
            raise LineError("invalid", f"LINE rejected the push (HTTP {status}): {_detail(resp)}", status=status)
    assert last is not None
    raise LineError(last.kind, f"{last.message} (after {MAX_ATTEMPTS} attempts)", status=last.status)


def _detail(resp: requests.Response) -> str:
    """LINE's `message` from an error body, bounded; never the request (it has the token)."""
    try:
        body = resp.json()
        text = str(body.get("message", "")) if isinstance(body, dict) else ""
        details = body.get("details") if isinstance(body, dict) else None
        if isinstance(details, list):
            text += " " + "; ".join(f"{d.get('property', '')}: {d.get('message', '')}" for d in details
                                    if isinstance(d, dict))
    except ValueError:
        text = resp.text or resp.reason or ""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200]
