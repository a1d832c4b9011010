"""A centre with the OA switched on, served on loopback, and the LINE sandbox delivering its
webhooks to it: what the tests/test_oa_*.py conversations run against."""
from __future__ import annotations

import datetime as dt
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from werkzeug.serving import make_server

from central.app import build_services, create_app
from central.config import parse
from lineapi import sandbox_oa
from lineapi.testing import RunningSandbox, running_sandbox
from tests.central_admin_util import Clock

BKK = dt.timezone(dt.timedelta(hours=7))
SECRET = "0123456789abcdef0123456789abcdef"   # the Messaging API channel's (sandbox) secret
TOKEN = "oa-test-access-token"


def bkk_ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=BKK).timestamp() * 1000)


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `cond` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class OaCentre:
    sb: RunningSandbox
    app: Any
    services: Any
    clock: Clock
    url: str
    client: Any

    @property
    def ext(self) -> Any:
        return self.app.extensions["skillspot_oa"]

    @property
    def oa(self) -> Any:
        return self.ext.oa

    def act(self, kind: str, user: str, **kw: Any) -> dict:
        """The user does something in LINE; the sandbox delivers the signed event; returns it."""
        ev, status = sandbox_oa.user_event(self.sb.state, kind, user, **kw)
        assert status == 200, f"webhook answered {status}"
        return ev

    def sent(self, user: str) -> list[dict]:
        return sandbox_oa.sent_to(self.sb.state, user)

    def texts(self, user: str) -> list[str]:
        out = []
        for m in self.sent(user):
            out.append(m.get("text") or m.get("altText") or "")
        return out

    def wait_text(self, user: str, needle: str, after: int = 0) -> list[dict]:
        return wait_for(lambda: [m for m in self.sent(user)[after:]
                                 if needle in (m.get("text") or m.get("altText") or "")],
                        f"a message to {user[:8]} containing {needle!r}")

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until the inbox and the due outbox are empty."""
        conn = self.services.appdb.connect()

        def idle() -> bool:
            a = conn.execute("SELECT count(*) FROM oa_inbox WHERE done_ms IS NULL").fetchone()[0]
            b = conn.execute("SELECT count(*) FROM oa_outbox WHERE status = 'pending' AND next_ms <= ?",
                             (self.clock.ms,)).fetchone()[0]
            return a == 0 and b == 0
        wait_for(idle, "the OA worker to finish its work", timeout)


@contextmanager
def oa_centre(tmp_path: Any, monkeypatch: Any, start_ms: int, **oa: Any) -> Iterator[OaCentre]:
    """Sandbox + centre (chDB store, SQLite app DB, OA worker), both on 127.0.0.1 with free ports."""
    clock = Clock(start_ms)
    monkeypatch.setenv("SKILLSPOT_OA_CHANNEL_SECRET", SECRET)
    monkeypatch.setenv("SKILLSPOT_OA_ACCESS_TOKEN", TOKEN)
    with running_sandbox(channel_id="1234567890", channel_secret="f" * 32, messaging_access_token=TOKEN,
                         messaging_channel_secret=SECRET, clock=clock) as sb:
        cfg = parse({"data_dir": str(tmp_path), "admin": {"secure_cookies": False},
                     "oa": {"enabled": True, "api_base_url": sb.url, "worker_poll_s": 0.05,
                            "wifi_checkin_every_s": 0.1, **oa}})
        services = build_services(cfg, clock=clock)
        app = create_app(cfg, services)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.port}"
        sb.state.oa.webhook_url = url + "/line/webhook"
        try:
            yield OaCentre(sb, app, services, clock, url, app.test_client())
        finally:
            app.extensions["skillspot_oa"].worker.stop()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
            services.store.close()
