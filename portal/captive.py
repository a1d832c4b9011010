"""Interception: any HTTP request for a host that is not the portal is sent to the portal.

The firewall redirects every plain-HTTP connection of a device not yet let in to this app,
whatever host it asked for. Answering those with a redirect (never an empty 200) is what
makes iOS, Android, Windows and Firefox decide "captive" and open their sign-in sheet.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, redirect, request

from portal.context import config

bp = Blueprint("captive", __name__)


def is_portal_host(host: str) -> bool:
    """True if the request was addressed to the portal itself (by name or LAN address)."""
    cfg = config()
    name = host.rsplit(":", 1)[0].strip("[]").lower()
    return name in {cfg.portal.hostname.lower(), str(cfg.network.lan_address.ip)}


@bp.before_app_request
def intercept_foreign_hosts() -> Response | None:
    """Redirect intercepted requests for other hosts to the splash page, uncached."""
    if is_portal_host(request.host):
        return None
    target = f"{config().portal.base_url}/?from={quote(request.url, safe='')}"
    resp = redirect(target, code=302)
    resp.headers["Cache-Control"] = "no-store, no-cache, must-revalidate"
    resp.headers["Pragma"] = "no-cache"
    return resp
