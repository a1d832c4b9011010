"""RFC 8908 Captive Portal API: GET /api/captive (discovered through DHCP option 114).

The answer is about the requesting device (its address, then its MAC through the gate's
authorised list): captive or not, where to log in, and how long its session has left.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response

from portal.clients import authorisation_for, client_ip
from portal.context import config
from portal.urls import user_portal_url, venue_info_url

bp = Blueprint("api", __name__)

MEDIA_TYPE = "application/captive+json"
MAX_BYTES = 4096  # Android reads at most 4 KB


def captive_state(ip: str) -> dict:
    """The RFC 8908 JSON object for the device at `ip`."""
    cfg = config()
    body: dict = {"captive": True, "user-portal-url": user_portal_url(cfg), "venue-info-url": venue_info_url(cfg)}
    auth = authorisation_for(ip)
    if auth is not None:
        body["captive"] = False
        body["seconds-remaining"] = max(0, int(auth.expires))
        # A session ends and the visitor logs in again; it is not extended in place.
        body["can-extend-session"] = False
    return body


@bp.get("/api/captive")
def captive_api() -> Response:
    """The Captive Portal API answer: application/captive+json, never cached."""
    data = json.dumps(captive_state(client_ip()), separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_BYTES:  # only a very long configured URL could do this
        raise ValueError(f"captive API answer is {len(data)} bytes, over {MAX_BYTES}; shorten venue_info_url")
    resp = Response(data, status=200, content_type=f"{MEDIA_TYPE}; charset=utf-8")
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
