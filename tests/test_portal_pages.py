"""Portal behaviour that needs no kernel: probe answers, the open-redirect guard, the device
limit, returning devices, the admin page's guards, languages and self-contained pages."""
from __future__ import annotations

import re
import time

import pytest
import requests
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from ledger.records import Login, rows
from lineapi.testing import login_as
from portal.i18n import SOURCE_DIR
from portal.probes import find_probe
from test_portal_login import PHONE_IP, PHONE_MAC, callback, portal, sandbox, start  # noqa: F401 (fixtures)

HOST = {"Host": "wifi.dsd.go.th:8080"}


# The answers each OS expects, written out literally (not taken from the table under test).
EXPECTED = [
    ("captive.apple.com", "/hotspot-detect.html", 200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"),
    ("connectivitycheck.gstatic.com", "/generate_204", 204, b""),
    ("www.google.com", "/gen_204", 204, b""),
    ("connect.rom.miui.com", "/generate_204", 204, b""),
    ("www.msftconnecttest.com", "/connecttest.txt", 200, b"Microsoft Connect Test"),
    ("www.msftncsi.com", "/ncsi.txt", 200, b"Microsoft NCSI"),
    ("detectportal.firefox.com", "/canonical.html", 200,
     b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>\n'),
    ("detectportal.firefox.com", "/success.txt", 200, b"success\n"),
]


@pytest.mark.parametrize("host,path,status,body", EXPECTED)
def test_probe_of_a_let_in_device_gets_exactly_what_its_os_expects(portal, host, path, status, body):
    client, svc = portal
    held = client.get(path, headers={"Host": host})
    assert held.status_code == 302 and "no-store" in held.headers["Cache-Control"]
    svc.gate.authorise(PHONE_MAC, PHONE_IP, 600)
    seen = client.get(path, headers={"Host": host})  # a keep-alive connection opened before login
    assert (seen.status_code, seen.data) == (status, body)


def test_a_non_probe_path_on_a_probe_host_is_not_a_probe():
    assert find_probe("www.msftconnecttest.com", "/other") is None
    assert find_probe("Captive.Apple.com:80", "/anything") is not None


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)",
                                    "/ok\r\nSet-Cookie: x=1"])
def test_an_open_redirect_in_the_return_url_is_refused(portal, target):
    client, svc = portal
    resp = client.get("/login", query_string={"terms": "2026-11", "next": target, "lang": "en"}, headers=HOST)
    assert resp.status_code == 400 and b"outside the WiFi portal" in resp.data
    assert svc.gate.authorised() == []
    assert any(r["kind"] == "login_refused" and "open_redirect" in r["detail"] for r in rows(svc.ledger, "events"))


def test_a_safe_return_path_is_followed_after_login(portal):
    client, svc = portal
    resp = client.get("/login", query_string={"terms": "2026-11", "next": "/venue"}, headers=HOST)
    with requests.Session() as http:
        params = login_as(http, resp.headers["Location"])
    done = callback(client, params)
    assert done.status_code == 303 and done.headers["Location"] == "/venue"


def test_login_without_accepting_the_terms_lets_nobody_in(portal):
    client, svc = portal
    resp = client.get("/login?lang=en", headers=HOST)
    assert resp.status_code == 400 and b"terms" in resp.data and svc.gate.authorised() == []


def test_the_accepted_terms_version_and_oa_choice_are_recorded(portal):
    client, svc = portal
    resp = client.get("/login", query_string={"terms": "2026-11"}, headers=HOST)  # OA box left unticked
    with requests.Session() as http:
        params = login_as(http, resp.headers["Location"], add_friend=False)
    assert callback(client, params).status_code == 303  # online without the OA friend
    [login] = list(rows(svc.ledger, "logins"))
    assert login["consent_version"] == "2026-11" and not login["friend"]
    assert any(r["kind"] == "oa_consent" and '"given": false' in r["detail"] for r in rows(svc.ledger, "events"))


def _login(mac: str, ip: str, user: str = "Uuser1", at: float | None = None) -> Login:
    return Login(method="line", line_user_id=user, display_name="Somchai", friend=True, friendship_changed=None,
                 consent_version="2026-11", mac=mac, ip=ip, expires_ms=int(((at or time.time()) + 600) * 1000))


def test_a_users_oldest_device_makes_room_for_the_newest(portal):
    _, svc = portal
    for i in range(4):  # the example config allows 3 devices per LINE user
        svc.sessions.admit(_login(f"02:00:00:00:01:0{i}", f"10.99.0.7{i}"), 600)
    online = sorted(a.mac for a in svc.gate.authorised())
    assert online == ["02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"]
    assert [r["reason"] for r in rows(svc.ledger, "logouts")] == ["device_limit"]


def test_returning_devices_are_let_in_only_when_they_should_be(portal):
    _, svc = portal
    sessions = svc.sessions
    mac, ip = "02:00:00:00:02:01", "10.99.0.81"
    assert not sessions.readmit(mac, ip)  # never logged in
    sessions.admit(_login(mac, ip), 600)
    assert not sessions.readmit(mac, ip)  # still online: a renewal, not a new session
    svc.gate.revoke(mac)  # the session ran out
    assert sessions.readmit(mac, ip)
    assert [r["method"] for r in rows(svc.ledger, "logins")] == ["line", "returning"]
    assert [r["reason"] for r in rows(svc.ledger, "logouts")] == ["relogin"]  # the first login ends there
    svc.gate.revoke(mac)
    real_clock, sessions.clock = sessions.clock, lambda: time.time() + 8 * 86400  # older than returning_days (7)
    assert not sessions.readmit(mac, ip)
    sessions.clock = real_clock
    sessions.end(mac, "admin_revoke", admin="somsak")
    assert not sessions.readmit(mac, ip)  # an admin shut it out: LINE login again


def test_the_admin_page_has_no_default_password(portal):
    client, _ = portal
    # From the box itself over HTTPS (the example's empty admin.networks): says how to add an admin.
    resp = client.get("/admin", headers=HOST, base_url="https://wifi.dsd.go.th:8443",
                      environ_overrides={"REMOTE_ADDR": "10.99.0.1"})
    assert resp.status_code == 403 and b"hash-password" in resp.data


def test_pages_switch_language_and_load_nothing_from_outside(portal):
    client, _ = portal
    th = client.get("/", headers=HOST).get_data(as_text=True)
    assert '<html lang="th">' in th and "เข้าสู่ระบบด้วย LINE" in th
    resp = client.get("/?lang=en", headers=HOST)
    en = resp.get_data(as_text=True)
    assert '<html lang="en">' in en and "Login with LINE" in en
    assert "lang=en" in resp.headers["Set-Cookie"]  # remembered for the next pages
    assert '<html lang="en">' in client.get("/terms", headers=HOST).get_data(as_text=True)
    for page in ("/", "/terms", "/venue", "/waiting", "/admin/login"):
        html = client.get(page, headers=HOST).get_data(as_text=True)
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html), page
        assert "@import" not in html and "url(http" not in html, page


def test_every_message_has_a_thai_translation():
    with (SOURCE_DIR / "th" / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale="th")
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    found = {msg[2] if isinstance(msg[2], str) else msg[2][0]
             for msg in extract_from_dir(SOURCE_DIR.parent, method_map, keywords={"_": None, "ngettext": (1, 2)})}
    missing = [m for m in found if not (catalog.get(m) and catalog.get(m).string)]
    assert not missing, f"add Thai for: {missing}"
