"""The admin pages on an open WiFi (issue 16, item 5): HTTPS only, management networks only
(never the visitor LAN; none configured = the box itself), a Secure/HttpOnly/SameSite=Strict
cookie of their own, failed logins slowed across workers, every action a ledger event with
the admin's name."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from base.config import ConfigError, load_config
from ledger.db import open_ledger
from ledger.records import rows
from lineapi.client import LineLogin
from netcfg.gate import MemoryGate
from portal import create_app
from portal.attempts import AttemptStore
from portal.services import PortalServices
from portal.throttle import FREE_FAILURES
from sessions import build_sessions

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"
PASSWORD = "admin-password-42"
MGMT_IP, PHONE_IP, PHONE_MAC = "192.168.50.7", "10.99.0.60", "3a:11:22:33:44:55"
HTTPS = "https://wifi.dsd.go.th:8443"


def write_config(tmp_path: Path, networks: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8").replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
    text = text.replace("users = {}", f'users = {{ somsak = "{generate_password_hash(PASSWORD)}" }}')
    text = re.sub(r"\nnetworks = \[\][^\n]*", f"\nnetworks = {networks}", text)
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def make_app(tmp_path: Path, networks: str = '["192.168.50.0/24"]'):
    cfg = load_config(write_config(tmp_path, networks))
    gate = MemoryGate(neighbours={PHONE_IP: PHONE_MAC})
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    services = PortalServices(gate=gate, ledger=ledger, line=LineLogin(cfg.line),
                              attempts=AttemptStore(tmp_path / "attempts.sqlite"),
                              sessions=build_sessions(cfg, ledger, gate=gate))
    return create_app(cfg, services), services


def client_from(app, ip: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(client, password: str = PASSWORD, name: str = "somsak"):
    page = client.get("/admin/login?lang=en", base_url=HTTPS)
    return client.post("/admin/login", base_url=HTTPS,
                       data={"csrf": csrf_of(page.get_data(as_text=True)), "name": name, "password": password})


def events(services, kind: str) -> list[dict]:
    return [{"subject": r["subject"], **json.loads(r["detail"])} for r in rows(services.ledger, "events")
            if r["kind"] == kind]


def test_the_visitor_lan_never_reaches_the_admin_pages(tmp_path):
    app, svc = make_app(tmp_path)
    phone = client_from(app, PHONE_IP)
    for path in ("/admin", "/admin/login"):
        assert phone.get(path, base_url=HTTPS).status_code == 403
    assert phone.post("/admin/login", base_url=HTTPS, data={"name": "somsak", "password": PASSWORD}).status_code == 403
    assert {e["reason"] for e in events(svc, "admin_refused")} == {"network"}


def test_plain_http_is_refused_without_a_form_or_a_cookie(tmp_path):
    app, svc = make_app(tmp_path)
    resp = client_from(app, MGMT_IP).get("/admin/login?lang=en", base_url="http://wifi.dsd.go.th:8080")
    assert resp.status_code == 403 and b"only over HTTPS" in resp.data
    assert b'name="password"' not in resp.data
    assert not any(c.startswith(("skillspot_admin=", "session=")) for c in resp.headers.getlist("Set-Cookie"))
    assert events(svc, "admin_refused")[-1]["reason"] == "plain_http"


def test_the_admin_cookie_is_secure_httponly_strict_and_apart_from_the_visitors(tmp_path):
    app, _ = make_app(tmp_path)
    admin = client_from(app, MGMT_IP)
    resp = login(admin)
    assert resp.status_code == 303
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("skillspot_admin="))
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert "secure" in attrs and "httponly" in attrs
    assert attrs["samesite"].lower() == "samesite=strict" and attrs["path"] == "Path=/admin"
    assert admin.get("/admin", base_url=HTTPS).status_code == 200
    # The visitors' session cookie is another cookie and never carries the admin login.
    visitor = client_from(app, PHONE_IP).get("/login?terms=2026-11&lang=en", headers={"Host": "wifi.dsd.go.th:8080"})
    visitor_cookie = next(c for c in visitor.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "SameSite=Lax" in visitor_cookie and "Path=/;" in visitor_cookie + ";"
    stolen = client_from(app, MGMT_IP)
    stolen.set_cookie("skillspot_admin", visitor_cookie.split(";")[0].split("=", 1)[1], path="/admin",
                      domain="wifi.dsd.go.th")
    assert stolen.get("/admin", base_url=HTTPS).status_code == 303  # back to the login form


def test_failed_logins_are_slowed_in_every_worker(tmp_path):
    app, svc = make_app(tmp_path)
    other_worker, _ = make_app(tmp_path)  # a second gunicorn worker: same data_dir, own app
    admin = client_from(app, MGMT_IP)
    for _ in range(FREE_FAILURES):
        assert login(admin, "wrong").status_code == 401
    slowed = login(client_from(other_worker, MGMT_IP))  # even the right password, in another worker
    assert slowed.status_code == 429 and int(slowed.headers["Retry-After"]) >= 1
    assert events(svc, "admin_login_throttled")[-1]["name"] == "somsak"
    # Another source trying the same name meets the same wait (per name, not only per source).
    assert login(client_from(app, "192.168.50.8")).status_code == 429


def test_every_admin_action_is_a_ledger_event_with_the_admins_name(tmp_path):
    app, svc = make_app(tmp_path)
    svc.gate.authorise(PHONE_MAC, PHONE_IP, 600)
    admin = client_from(app, MGMT_IP)
    assert login(admin).status_code == 303
    home = admin.get("/admin?lang=en", base_url=HTTPS)
    assert home.status_code == 200 and PHONE_MAC in home.get_data(as_text=True)
    done = admin.post("/admin/revoke", base_url=HTTPS, data={"csrf": csrf_of(home.get_data(as_text=True)),
                                                             "mac": PHONE_MAC})
    assert done.status_code == 303 and svc.gate.authorised() == []
    page = admin.get("/admin?lang=en", base_url=HTTPS).get_data(as_text=True)
    assert admin.post("/admin/logout", base_url=HTTPS, data={"csrf": csrf_of(page)}).status_code == 303
    assert events(svc, "admin_login")[-1]["name"] == "somsak"
    assert events(svc, "admin_view")[-1]["admin"] == "somsak"
    revoked = events(svc, "admin_revoke")[-1]
    assert (revoked["subject"], revoked["admin"], revoked["source"]) == (PHONE_MAC, "somsak", MGMT_IP)
    assert events(svc, "admin_logout")[-1]["admin"] == "somsak"


def test_no_networks_means_the_box_itself_only(tmp_path):
    app, _ = make_app(tmp_path, networks="[]")
    assert login(client_from(app, "10.99.0.1")).status_code == 303   # the box's own address (ssh -L)
    assert login(client_from(app, "127.0.0.1")).status_code == 303
    assert client_from(app, MGMT_IP).get("/admin/login", base_url=HTTPS).status_code == 403
    assert client_from(app, PHONE_IP).get("/admin/login", base_url=HTTPS).status_code == 403


@pytest.mark.parametrize("networks", ['["10.99.0.0/24"]', '["10.0.0.0/8"]', '["0.0.0.0/0"]', '["10.99.0.77/32"]'])
def test_a_management_network_on_the_visitor_lan_is_a_config_error(tmp_path, networks):
    with pytest.raises(ConfigError, match=r"admin.networks contains .* overlaps the visitor LAN 10.99.0.0/24"):
        load_config(write_config(tmp_path, networks))


def test_the_example_is_safe_as_shipped():
    cfg = load_config(EXAMPLE)
    assert cfg.admin.networks == [] and cfg.admin.users == {} and cfg.network.ipv6 == "off"
