"""The simulated office end to end: real dnsmasq, nftables, gunicorn portal and LINE sandbox
in network namespaces, a phone doing real DHCP and HTTP."""
from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from simoffice.office import PORTAL_HOST, WEB_IP, Office

pytestmark = pytest.mark.netns
PORTAL = f"http://{PORTAL_HOST}:8080"


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    with Office(workdir=tmp_path_factory.mktemp("office")) as o:
        yield o


@pytest.fixture(scope="module")
def lease(office):
    return office.phone_dhcp()


def online(office: Office) -> bool:
    """The phone reaches the internet: a TCP connection to 443 and the real page on port 80 (both
    or neither: a half-open gate is a bug)."""
    reached = tcp_reaches(office)
    page = office.phone("get", "http://example.com/")
    assert reached == (page.get("status") == 200 and "Hello from the internet" in page.get("body", "")), page
    return reached


def tcp_reaches(office: Office) -> bool:
    return office.phone("tcp", WEB_IP, "443")["result"] == "connected"


def ledger_rows(office: Office, sql: str) -> list[tuple]:
    with sqlite3.connect(office.data_dir / "ledger.sqlite") as conn:
        return conn.execute(sql).fetchall()


def test_dhcp_lease_is_recorded(office, lease):
    assert lease["ip"].startswith("10.99.0.")
    assert lease["router"] == "10.99.0.1" and lease["dns"] == "10.99.0.1"
    # dnsmasq runs its lease script after sending the ACK: give it a moment.
    deadline = time.monotonic() + 20
    while not (rows := ledger_rows(office, "SELECT event, mac, ip, hostname, expires_ms FROM leases")):
        assert time.monotonic() < deadline, "dnsmasq's lease event never reached the ledger"
        time.sleep(0.2)
    assert ("add", lease["mac"], lease["ip"], "demo-phone") in [r[:4] for r in rows]
    assert all(r[4] and r[4] > time.time() * 1000 for r in rows if r[0] == "add")


def test_held_at_the_portal_before_login(office, lease):
    assert not online(office)
    refused = office.phone("tcp", WEB_IP, "443")
    assert refused["result"] == "refused" and refused["seconds"] < 1.0  # a reset, not a timeout
    probe = office.phone("get", "http://connectivitycheck.gstatic.com/generate_204")
    assert probe["status"] == 302 and probe["location"].startswith(PORTAL + "/")
    # DNS to a foreign resolver is not a way round the portal.
    assert office.phone("tcp", "198.51.100.1", "53")["result"] == "refused"


def test_cancelled_login_lets_nobody_in(office, lease):
    result = office.phone("login", PORTAL, "0", "--cancel")
    assert not result["ok"] and "cancelled" in result["body"].lower()
    assert not online(office)


def test_login_with_line_opens_the_internet_and_is_recorded(office, lease):
    result = office.phone("login", PORTAL)
    assert result["ok"], result
    assert online(office)
    assert office.phone("get", "http://connectivitycheck.gstatic.com/generate_204")["status"] == 204
    assert lease["mac"] in office.box("nft", "list")
    rows = ledger_rows(office, "SELECT method, line_user_id, mac, ip, friend, consent_version, expires_ms FROM logins")
    assert rows, "no login recorded"
    method, user, mac, ip, friend, consent, expires_ms = rows[-1]
    assert (method, user, mac, ip) == ("line", result["user"], lease["mac"], lease["ip"])
    assert friend == 1 and consent
    assert abs(expires_ms / 1000 - (time.time() + office.session_seconds)) < 120


def test_revoke_shuts_the_phone_out(office, lease):
    assert office.phone("login", PORTAL)["ok"]
    assert online(office)
    assert lease["ip"] in office.box("nft", "revoke", lease["mac"])
    assert not online(office)
    assert office.phone("get", "http://example.com/")["status"] == 302


def test_the_kernel_expires_an_authorisation_by_itself(office, lease):
    # Every skillspot process is down (the gate stopped) and a session is near its end: the
    # kernel alone ends it. The element is written with nft itself, as the gate would.
    gate = office.procs.pop("gate")
    os.killpg(gate.pid, signal.SIGTERM)
    gate.wait(timeout=10)
    try:
        key = f'{lease["mac"]} . {lease["ip"]}'
        office.run_in(office.box_ns, ["nft", f"add element inet skillspot authorised {{ {key} timeout 3s }}; "
                                             f"add element inet skillspot active {{ {key} }}"])
        assert online(office)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and tcp_reaches(office):
            time.sleep(0.5)
        assert not online(office)
    finally:
        office.start_gate()
    assert lease["mac"] not in office.box("nft", "list")


def test_reloading_the_firewall_keeps_sessions(office, lease):
    assert office.phone("login", PORTAL)["ok"]
    out = office.box("nft", "apply")
    assert "carried over" in out
    assert online(office)
    assert lease["mac"] in office.box("nft", "list")  # the gate's index still holds it
    office.box("nft", "revoke", lease["mac"])


def test_dhcp_announces_the_captive_portal_api_over_https(office, lease):
    # RFC 8910 option 114; clients ignore a URL that is not HTTPS.
    assert lease["captive_api"] == f"https://{PORTAL_HOST}:8443/api/captive"
    page = office.phone("get", f"https://{PORTAL_HOST}:8443/")
    assert page.get("status") == 200, page  # the certificate verified against the CA the phone trusts
