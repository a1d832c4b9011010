"""Who is asking: the client's address, its MAC, whether the gate lets it through, and whether
the page is being shown inside an OS captive-portal mini-browser.

The login state is keyed by the device (its address and MAC as the gate sees them), not only
by a browser cookie: a login finished in the phone's real browser releases the device that
the mini-browser is still showing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from flask import request

from ledger.records import latest_lease
from netcfg.gate import Authorisation, Gate
from portal.context import services


def client_ip() -> str:
    """The requesting device's address (the portal is reached directly, never via a proxy)."""
    return request.remote_addr or ""


def client_mac(ip: str) -> str | None:
    """The device behind `ip`: the neighbour table first, the DHCP lease record second."""
    mac = services().gate.mac_for_ip(ip)
    if mac:
        return mac
    lease = latest_lease(services().ledger, ip)
    return lease["mac"] if lease else None


def authorisation_for(ip: str) -> Authorisation | None:
    """The gate's live authorisation of the device at `ip`, or None if it is held at the portal.

    When the MAC behind `ip` is known it must be the authorised one: an address reused by
    another device after a lease change is not that device's session.
    """
    return authorisation_of(services().gate, ip) if ip else None


def authorisation_of(gate: Gate, ip: str) -> Authorisation | None:
    """`authorisation_for` with the gate given (outside a request: the interception middleware)."""
    matches = gate.authorised(ip=ip)  # one index look-up in the gate, never a set dump
    if not matches:
        return None
    mac = gate.mac_for_ip(ip)
    for auth in matches:
        if mac is None or auth.mac == mac:
            return auth
    return None


@dataclass(frozen=True)
class Browser:
    """What kind of browser shows the page. `mini` is an OS captive-portal sheet."""

    mini: bool
    platform: str  # "ios", "android" or "other"


_IOS = re.compile(r"\((iPhone|iPad|iPod)")
# In-app browsers of LINE, Facebook, Instagram also lack "Safari/" or carry "; wv)"; they are
# full browsers with cookies and app links, not captive sheets.
_IN_APP = re.compile(r"( Line/|FBAN|FBAV|Instagram)")


def detect_browser(user_agent: str) -> Browser:
    """Classify a User-Agent.

    iOS Captive Network Assistant: a Mobile Safari-like UA without the "Safari/" token.
    Android CaptivePortalLogin: a WebView, whose UA contains "; wv)". Both are heuristics
    (see captive-clients.md); the page offers the browser handoff to anyone anyway.
    """
    ua = user_agent or ""
    if _IOS.search(ua):
        mini = "AppleWebKit" in ua and "Safari/" not in ua and not _IN_APP.search(ua) and "CriOS" not in ua
        return Browser(mini=mini, platform="ios")
    if "Android" in ua:
        return Browser(mini="; wv)" in ua and not _IN_APP.search(ua), platform="android")
    return Browser(mini=False, platform="other")
