"""Helpers for tests that need the LINE sandbox on a real loopback HTTP server.

    with running_sandbox(channel_id=..., channel_secret=...) as sb:
        cfg = LineConfig(..., login_base_url=sb.url, api_base_url=sb.url, messaging_base_url=sb.url)
        ...
        sb.state.list_pushes()

`login_as` plays the user's part of the login page the way a script would: it reads the page's
form (hidden inputs and the user <select>) and posts it back.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import requests
from flask import Flask
from werkzeug.serving import make_server

from lineapi.sandbox import SandboxState, create_sandbox_app


class FakeClock:
    """A settable clock for `create_sandbox_app(clock=...)`: call it for the time."""

    def __init__(self, now: float) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningSandbox:
    url: str
    app: Flask

    @property
    def state(self) -> SandboxState:
        return self.app.extensions["line_sandbox"]


@contextmanager
def running_sandbox(host: str = "127.0.0.1", **app_kwargs: Any) -> Iterator[RunningSandbox]:
    """Serve `create_sandbox_app(**app_kwargs)` on a free port of `host` in a thread; stop it
    (releasing any request held by a "hang" fault) on exit."""
    app = create_sandbox_app(**app_kwargs)
    server = make_server(host, 0, app, threaded=True)
    # a short poll interval makes shutdown() quick; many tests start and stop a sandbox
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="line-sandbox", daemon=True)
    thread.start()
    try:
        yield RunningSandbox(url=f"http://{host}:{server.port}", app=app)
    finally:
        app.extensions["line_sandbox"].clear_faults()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class LoginForm(HTMLParser):
    """The sandbox login page's form: action, hidden fields, user options, checkbox names."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.users: list[str] = []
        self.checkboxes: list[str] = []
        self.buttons: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("type") == "checkbox":
            self.checkboxes.append(a["name"])
        elif tag == "option":
            self.users.append(a.get("value", ""))
        elif tag == "button" and a.get("name") == "sandbox_action":
            self.buttons.append(a.get("value", ""))


def login_as(http: requests.Session, authorize_url: str, user_id: str | None = None, *,
             action: str = "allow", add_friend: bool = False) -> dict[str, str]:
    """Open `authorize_url`, submit the login form as `user_id` (default: the first user) with
    `action`, and return the callback's query parameters (the redirect is not followed)."""
    page = http.get(authorize_url, timeout=10)
    page.raise_for_status()
    form = LoginForm(page.text)
    fields = dict(form.hidden)
    fields["sandbox_user"] = user_id or form.users[0]
    fields["sandbox_action"] = action
    if add_friend:
        fields["sandbox_add_friend"] = "1"
    parts = urlsplit(authorize_url)
    resp = http.post(f"{parts.scheme}://{parts.netloc}{form.action}", data=fields, allow_redirects=False, timeout=10)
    if resp.status_code != 302:
        raise AssertionError(f"login form answered {resp.status_code}, not a redirect: {resp.text[:200]}")
    query = parse_qs(urlsplit(resp.headers["Location"]).query, keep_blank_values=True)
    return {k: v[-1] for k, v in query.items()}
