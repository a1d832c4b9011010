"""Interception: any HTTP request for a host that is not the portal is answered here.

The firewall redirects every plain-HTTP connection of a device not yet let in to this app,
whatever host it asked for. Answering those with a redirect (never an empty 200) is what
makes iOS, Android, Windows and Firefox decide "captive" and open their sign-in sheet.
A device already let through normally reaches the real host; if one of its probes still
lands here (a connection opened before the gate changed), it gets the answer its OS expects
(portal/probes.py), so the OS turns "online" instead of showing the sheet again.
"""
from __future__ import annotations

from html import escape
from urllib.parse import quote

from base.config import Config
from netcfg.gate import Gate, GateError
from portal.clients import authorisation_of
from portal.probes import find_probe

NO_CACHE = [("Cache-Control", "no-store, no-cache, must-revalidate"), ("Pragma", "no-cache"), ("Expires", "0")]
CLOSE_KEY = "skillspot.close_connection"  # read by portal.cli.close_when_asked
_STATUS = {200: "200 OK", 204: "204 No Content", 302: "302 Found"}


def portal_names(cfg: Config) -> frozenset[str]:
    """The names a request for the portal itself carries in its Host (its name, its LAN address)."""
    return frozenset({cfg.portal.hostname.lower(), str(cfg.network.lan_address.ip)})


def host_name(host: str) -> str:
    """'Wifi.DSD.go.th:8080' -> 'wifi.dsd.go.th' (the Host header without port or brackets)."""
    return host.rsplit(":", 1)[0].strip("[]").lower()


def probe_answer(host: str, path: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """The "online" answer (status, headers, body) for a known OS probe, or None if
    (host, path) is not one."""
    probe = find_probe(host, path)
    if probe is None:
        return None
    headers = [("Content-Type", probe.content_type)] if probe.content_type else []
    headers += [*probe.headers, *NO_CACHE, ("Content-Length", str(len(probe.body)))]
    return probe.status, headers, probe.body


class Interceptor:
    """WSGI middleware in front of the portal's Flask app: requests for any other host are
    answered here, without Flask.

    Every phone that joins sends these (OS probes, apps' background requests) until its visitor
    logs in, many per minute at a busy office, and each answer is fixed: a probe of an
    authorised device gets its OS's success answer; everything else a 302, uncached, to the
    splash page. Going through Flask's request context, session and i18n for them cost several
    times the answer itself.
    """

    def __init__(self, app, config: Config, gate: Gate) -> None:
        self.app, self.config, self.gate = app, config, gate
        self.splash = f"{config.portal.base_url}/"
        self.own_names = portal_names(config)  # every request asks: worked out once

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if host_name(host) in self.own_names:
            return self.app(environ, start_response)
        # This connection leads to the portal only because the firewall redirected it: close it
        # after the answer, so the browser's next request (after the login) opens a new one.
        environ[CLOSE_KEY] = True
        path = environ.get("PATH_INFO", "") or "/"
        if self._authorised(environ.get("REMOTE_ADDR", "")):
            answer = probe_answer(host, path)
            if answer is not None:
                status, headers, body = answer
                start_response(_STATUS[status], headers)
                return [body]
        query = environ.get("QUERY_STRING", "")
        asked = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{quote(path)}{'?' + query if query else ''}"
        target = f"{self.splash}?from={quote(asked, safe='')}"
        body = f'<!doctype html>\n<title>WiFi login</title>\n<a href="{escape(target)}">{escape(target)}</a>\n'.encode()
        start_response("302 Found", [("Location", target), ("Content-Type", "text/html; charset=utf-8"),
                                     ("Content-Length", str(len(body))), *NO_CACHE])
        return [body]

    def _authorised(self, ip: str) -> bool:
        """Whether the gate lets the device at `ip` through (the same rule as the pages use:
        when the MAC behind `ip` is known it must be the authorised one). A device the gate
        cannot answer for (the gate down, an IPv6 address: the gate keys devices by IPv4) is
        sent to the portal, whose pages say what is going on."""
        if not ip or ":" in ip:
            return False
        try:
            return authorisation_of(self.gate, ip) is not None
        except GateError:
            return False
