"""Interception: any HTTP request for a host that is not the portal is answered here.

The firewall redirects every plain-HTTP connection of a device not yet let in to this app,
whatever host it asked for. Answering those with a redirect (never an empty 200) is what
makes iOS, Android, Windows and Firefox decide "captive" and open their sign-in sheet.
A device already let through normally reaches the real host; if one of its probes still
lands here (a connection opened before the gate changed), it gets the answer its OS expects
(portal/probes.py), so the OS turns "online" instead of showing the sheet again.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, redirect, request

from portal.clients import authorisation_for, client_ip
from portal.context import config
from portal.probes import find_probe

bp = Blueprint("captive", __name__)

NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate", "Pragma": "no-cache", "Expires": "0"}


def is_portal_host(host: str) -> bool:
    """True if the request was addressed to the portal itself (by name or LAN address)."""
    cfg = config()
    name = host.rsplit(":", 1)[0].strip("[]").lower()
    return name in {cfg.portal.hostname.lower(), str(cfg.network.lan_address.ip)}


def probe_answer(host: str, path: str) -> Response | None:
    """The "online" answer for a known OS probe, or None if (host, path) is not one."""
    probe = find_probe(host, path)
    if probe is None:
        return None
    resp = Response(probe.body, status=probe.status)
    if probe.content_type:
        resp.headers["Content-Type"] = probe.content_type
    else:
        resp.headers.remove("Content-Type")
    for name, value in probe.headers:
        resp.headers[name] = value
    resp.headers.update(NO_CACHE)
    return resp


@bp.before_app_request
def intercept_foreign_hosts() -> Response | None:
    """Answer requests for other hosts: a probe of an authorised device gets its OS's success
    answer; everything else is redirected, uncached, to the splash page."""
    if is_portal_host(request.host):
        return None
    # This connection leads to the portal only because the firewall redirected it: close it
    # after the answer, so the browser's next request (after the login) opens a new one.
    request.environ["skillspot.close_connection"] = True
    if authorisation_for(client_ip()) is not None:
        answer = probe_answer(request.host, request.path)
        if answer is not None:
            return answer
    target = f"{config().portal.base_url}/?from={quote(request.url, safe='')}"
    resp = redirect(target, code=302)
    resp.headers.update(NO_CACHE)
    return resp
