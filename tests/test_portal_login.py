"""The portal's LINE login against the sandbox on loopback, with an in-memory gate."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from ledger.db import open_ledger
from ledger.records import rows
from lineapi.client import LineLogin
from lineapi.testing import login_as, running_sandbox
from netcfg.gate import MemoryGate
from sessions import build_sessions
from portal import create_app
from portal.attempts import AttemptStore
from portal.services import PortalServices
from base.config import load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"
PHONE_IP, PHONE_MAC = "10.99.0.60", "02:00:00:00:00:60"


@pytest.fixture
def sandbox():
    cfg = load_config(EXAMPLE)
    with running_sandbox(channel_id=cfg.line.channel_id, channel_secret=cfg.line.channel_secret) as sb:
        yield sb


@pytest.fixture
def portal(tmp_path, sandbox):
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
    for key in ("login_base_url", "api_base_url", "messaging_base_url"):
        text = text.replace(f'{key} = "https://', f'{key} = "{sandbox.url}" #', 1)
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    cfg = load_config(tmp_path / "c.toml")
    gate = MemoryGate(neighbours={PHONE_IP: PHONE_MAC})
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    services = PortalServices(gate=gate, ledger=ledger, line=LineLogin(cfg.line),
                              attempts=AttemptStore(tmp_path / "attempts.sqlite"),
                              sessions=build_sessions(cfg, ledger, gate=gate))
    app = create_app(cfg, services)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = PHONE_IP
    return client, services


def start(client) -> str:
    resp = client.get("/login?terms=2026-11&lang=en", headers={"Host": "wifi.dsd.go.th:8080"})
    assert resp.status_code == 302
    return resp.headers["Location"]


def callback(client, params: dict):
    return client.get("/callback?" + urlencode(params), headers={"Host": "wifi.dsd.go.th:8080"})


def test_foreign_hosts_are_sent_to_the_portal(portal):
    client, _ = portal
    resp = client.get("/generate_204", headers={"Host": "connectivitycheck.gstatic.com"})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("http://wifi.dsd.go.th:8080/?from=")
    assert "no-store" in resp.headers["Cache-Control"]
    assert client.get("/", headers={"Host": "wifi.dsd.go.th:8080"}).status_code == 200


def test_login_authorises_the_device_and_records_it(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client), add_friend=True)
    resp = callback(client, params)
    assert resp.status_code == 303, resp.text
    [auth] = svc.gate.authorised()
    assert (auth.mac, auth.ip, auth.timeout) == (PHONE_MAC, PHONE_IP, 14400)
    [login] = list(rows(svc.ledger, "logins"))
    assert login["mac"] == PHONE_MAC and login["friend"] == 1 and login["friendship_changed"] == 1
    assert login["line_user_id"].startswith("U") and login["consent_version"] == "2026-11"
    # The same callback again (a replay) lets nothing more in and is refused.
    again = callback(client, params)
    assert again.status_code == 400 and b"no longer valid" in again.data
    assert len(list(rows(svc.ledger, "logins"))) == 1


def test_a_forged_state_is_refused(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client))
    params["state"] = "forged" + params["state"][6:]
    resp = callback(client, params)
    assert resp.status_code == 400 and b"Traceback" not in resp.data
    assert svc.gate.authorised() == []
    assert any(r["kind"] == "login_refused" and "state_mismatch" in r["detail"] for r in rows(svc.ledger, "events"))


def test_cancel_shows_a_friendly_retry(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client), action="cancel")
    resp = callback(client, params)
    assert resp.status_code == 400 and b"cancelled" in resp.data and b'href="/"' in resp.data
    assert svc.gate.authorised() == []


def test_an_unknown_device_is_not_let_in(portal):
    client, svc = portal
    svc.gate.neighbours.clear()
    with requests.Session() as http:
        params = login_as(http, start(client))
    resp = callback(client, params)
    assert resp.status_code == 409 and svc.gate.authorised() == []


def test_with_the_gate_down_a_probe_is_still_sent_to_the_portal(tmp_path):
    """The interception answers without the gate when it cannot ask it; the splash page then
    says "just a moment" (503) instead of a bare server error."""
    from netcfg.gateclient import GateClient
    text = EXAMPLE.read_text(encoding="utf-8").replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    cfg = load_config(tmp_path / "c.toml")
    gate = GateClient(tmp_path / "no-gate.sock", timeout=1)  # nothing listens there
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    services = PortalServices(gate=gate, ledger=ledger, line=LineLogin(cfg.line),
                              attempts=AttemptStore(tmp_path / "attempts.sqlite"),
                              sessions=build_sessions(cfg, ledger, gate=gate))
    client = create_app(cfg, services).test_client()
    client.environ_base["REMOTE_ADDR"] = PHONE_IP
    probe = client.get("/hotspot-detect.html", headers={"Host": "captive.apple.com"})
    assert probe.status_code == 302 and probe.headers["Location"].startswith("http://wifi.dsd.go.th:8080/?from=")
    splash = client.get("/", headers={"Host": "wifi.dsd.go.th:8080"})
    assert splash.status_code == 503 and b"Traceback" not in splash.data
