"""The portal journey inside the simulated office, beyond the basic login: every OS probe held
then released, the RFC 8908 API, the welcome push, the bandwidth cap, a returning device, the
mini-browser handoff and the admin page. Real dnsmasq, nftables, gunicorn and LINE sandbox."""
from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
import time

import pytest
from werkzeug.security import generate_password_hash

from portal.probes import PROBES
from simoffice.office import LINE_IP, PORTAL_HOST, WEB_IP, Office

pytestmark = pytest.mark.netns
PORTAL = f"http://{PORTAL_HOST}:8080"
API = f"https://{PORTAL_HOST}:8443/api/captive"
CAP_KBIT = 8000  # 1 MB/s each way per device
ADMIN_PASSWORD = "office-admin-pw-1"
IOS_CNA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Mobile/15E148")
IOS_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    admin = f'\n[admin]\nusers = {{ somsak = "{generate_password_hash(ADMIN_PASSWORD)}" }}\n'
    with Office(workdir=tmp_path_factory.mktemp("portal-office"),
                portal_settings={"bandwidth_kbit": CAP_KBIT, "returning_days": 7}, extra_toml=admin) as o:
        o.lease = o.phone_dhcp()
        yield o


def logged_out(office: Office) -> None:
    office.box("nft", "revoke", office.lease["mac"])


def script(office: Office, code: str) -> dict:
    """Run a Python snippet as the phone (requests, trusting the demo CA); its JSON output."""
    proc = office.run_in(office.phone_ns, ["env", f"REQUESTS_CA_BUNDLE={office.ca_cert}", sys.executable, "-c",
                                           textwrap.dedent(code)], timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def probe_url(probe) -> str:
    path = "/hotspot-detect.html" if "*" in probe.paths else next(p for p in probe.paths if p)
    return f"http://{probe.hosts[0]}{path}"


def test_every_os_probe_opens_the_sheet_before_login_and_closes_it_after(office):
    logged_out(office)
    for probe in PROBES:
        held = office.phone("get", probe_url(probe), f"--ua={probe.user_agent}")
        assert held["status"] == 302 and held["location"].startswith(PORTAL + "/"), (probe.client, held)
        assert "no-store" in held["cache_control"], probe.client
    assert office.phone("login", PORTAL)["ok"]
    for probe in PROBES:
        seen = office.phone("get", probe_url(probe), f"--ua={probe.user_agent}")
        assert seen["status"] == probe.status, (probe.client, seen)
        assert seen["body"] == probe.body.decode(), (probe.client, seen)


def test_captive_api_says_captive_then_how_long_is_left(office):
    logged_out(office)
    code = f"""
        import json, requests
        r = requests.get({API!r}, headers={{"Accept": "application/captive+json"}}, timeout=10)
        print(json.dumps({{"type": r.headers["Content-Type"], "body": r.json(), "cache": r.headers["Cache-Control"]}}))
    """
    before = script(office, code)
    assert before["type"].startswith("application/captive+json") and "no-store" in before["cache"]
    assert before["body"]["captive"] is True
    assert before["body"]["user-portal-url"] == f"https://{PORTAL_HOST}:8443/"
    assert before["body"]["venue-info-url"].startswith("https://")
    assert office.phone("login", PORTAL)["ok"]
    after = script(office, code)["body"]
    assert after["captive"] is False and after["can-extend-session"] is False
    assert 3500 <= after["seconds-remaining"] <= 3600


def test_the_welcome_push_reaches_the_visitor_on_line(office):
    logged_out(office)
    result = office.phone("login", PORTAL)  # ticks the optional OA-messages box and adds the friend
    assert result["ok"]
    user = result["user"]
    deadline = time.monotonic() + 15
    while True:  # the push is sent in the background: internet access never waits for it
        got = script(office, """
            import json, requests
            print(json.dumps(requests.get("http://api.line.me/sandbox/pushes", timeout=10).json()))
        """)
        if any(p.get("to") == user for p in got["pushes"]):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.5)
    push = next(p for p in got["pushes"] if p.get("to") == user)
    assert "WiFi" in json.dumps(push, ensure_ascii=False)


def test_the_bandwidth_cap_holds_each_device_to_its_rate(office):
    logged_out(office)
    assert office.phone("login", PORTAL)["ok"]
    size = 8_000_000
    got = office.phone("download", f"http://{WEB_IP}/bytes/{size}", timeout=120)
    assert got["status"] == 200 and got["bytes"] == size
    rate = got["bytes"] / got["seconds"]
    cap = CAP_KBIT * 1000 / 8
    # The meter allows a one-second burst, so 8 MB at 1 MB/s takes about seven seconds.
    assert rate < 1.6 * cap, f"{rate:.0f} B/s through a {cap:.0f} B/s cap"


def test_a_returning_device_is_let_in_on_its_next_lease_without_the_portal(office):
    logged_out(office)
    assert office.phone("login", PORTAL)["ok"]
    office.box("nft", "revoke", "--reason", "logout", office.lease["mac"])  # the session ended (not an admin's revoke)
    assert office.phone("get", "http://example.com/")["status"] == 302
    office.phone_dhcp()  # reconnects: a new DHCP exchange, the lease hook runs
    deadline = time.monotonic() + 20
    while office.phone("get", "http://example.com/").get("status") != 200:
        assert time.monotonic() < deadline, "the returning device was not let in again"
        time.sleep(0.5)
    with sqlite3.connect(office.data_dir / "ledger.sqlite") as db:
        method, mac = db.execute("SELECT method, mac FROM logins ORDER BY id DESC LIMIT 1").fetchone()
    assert (method, mac) == ("returning", office.lease["mac"])


def test_a_login_started_in_the_mini_browser_finishes_in_the_real_browser(office):
    logged_out(office)
    code = f"""
        import json, requests
        mini = requests.Session(); mini.headers["User-Agent"] = {IOS_CNA!r}
        splash = mini.get({PORTAL!r} + "/?lang=en", timeout=10).text
        before = mini.get({PORTAL!r} + "/status", timeout=10).json()
        print(json.dumps({{"handoff": 'id="mini-browser"' in splash and {PORTAL!r} + "/" in splash,
                          "before": before}}))
    """
    seen = script(office, code)
    assert seen["handoff"] and seen["before"]["online"] is False
    assert office.phone("login", PORTAL, f"--ua={IOS_SAFARI}")["ok"]  # the real browser logs in
    after = script(office, f"""
        import json, requests
        mini = requests.Session(); mini.headers["User-Agent"] = {IOS_CNA!r}
        print(json.dumps({{"status": mini.get({PORTAL!r} + "/status", timeout=10).json(),
                          "waiting": 'id="online"' in mini.get({PORTAL!r} + "/waiting", timeout=10).text}}))
    """)
    assert after["status"]["online"] is True and after["status"]["seconds_remaining"] > 0 and after["waiting"]


def test_the_mini_browser_can_log_in_by_itself(office):
    logged_out(office)
    assert office.phone("login", PORTAL, f"--ua={IOS_CNA}")["ok"]
    assert office.phone("get", "http://example.com/")["status"] == 200


def test_the_admin_sees_who_is_online_and_revokes_them(office):
    logged_out(office)
    assert office.phone("login", PORTAL)["ok"]
    mac = office.lease["mac"]
    # From the visitor LAN the admin pages answer nothing, over HTTP or HTTPS, right password or not.
    refused = script(office, f"""
        import json, requests
        print(json.dumps([requests.get(u + "/admin/login?lang=en", timeout=10).status_code
                          for u in ({PORTAL!r}, "https://{PORTAL_HOST}:8443")]))
    """)
    assert refused == [403, 403]
    # The office's admin.networks is empty: the box itself (an admin over ssh -L), HTTPS only.
    code = textwrap.dedent(f"""
        import json, re, requests
        s = requests.Session(); base = "https://{PORTAL_HOST}:8443/admin"
        page = s.get(base + "/login?lang=en", timeout=10).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        bad = s.post(base + "/login", data={{"csrf": csrf, "name": "somsak", "password": "wrong"}}, timeout=10)
        good = s.post(base + "/login", data={{"csrf": csrf, "name": "somsak", "password": {ADMIN_PASSWORD!r}}},
                      timeout=10)
        cookie = next(c for c in s.cookies if c.name == "skillspot_admin")
        listed = {mac!r} in good.text and 'id="health"' in good.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', good.text).group(1)
        forged = s.post(base + "/revoke", data={{"csrf": "forged", "mac": {mac!r}}}, timeout=10)
        done = s.post(base + "/revoke", data={{"csrf": csrf, "mac": {mac!r}}}, timeout=10)
        print(json.dumps({{"bad": bad.status_code, "listed": listed, "forged": forged.status_code,
                          "done": done.status_code, "notice": "revoked" in done.text, "secure": cookie.secure}}))
    """)
    proc = office.run_in(office.box_ns, ["env", f"REQUESTS_CA_BUNDLE={office.ca_cert}", sys.executable, "-c", code],
                         timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out == {"bad": 401, "listed": True, "forged": 400, "done": 200, "notice": True, "secure": True}
    assert office.phone("get", "http://example.com/")["status"] == 302
    with sqlite3.connect(office.data_dir / "ledger.sqlite") as db:
        reasons = [r[0] for r in db.execute("SELECT reason FROM logouts WHERE mac = ?", [mac])]
        events = [r[0] for r in db.execute("SELECT kind FROM events")]
    assert "admin_revoke" in reasons and "admin_login_failed" in events and "admin_login" in events
    assert "admin_refused" in events
