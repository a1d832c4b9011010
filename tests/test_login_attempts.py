"""A callback refused because it came from another device leaves the attempt usable by its
own device (issue 16, item 6): whoever sees the callback URL cannot cancel someone's login."""
from __future__ import annotations

import time
from urllib.parse import urlencode

import requests

from ledger.records import rows
from lineapi.testing import login_as
from portal.attempts import Attempt, AttemptStore
from test_portal_login import PHONE_IP, PHONE_MAC, callback, portal, sandbox, start  # noqa: F401 (fixtures)

OTHER_IP = "10.99.0.61"
HOST = {"Host": "wifi.dsd.go.th:8080"}


def other_device(client):
    """A second device on the LAN: its own address, its own (empty) cookie jar."""
    other = client.application.test_client()
    other.environ_base["REMOTE_ADDR"] = OTHER_IP
    return other


def refusals(svc) -> list[str]:
    return [r["detail"] for r in rows(svc.ledger, "events") if r["kind"] == "login_refused"]


def test_a_success_callback_from_another_device_leaves_the_attempt_to_its_owner(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client))
    stolen = callback(other_device(client), params)
    assert stolen.status_code == 400 and svc.gate.authorised() == []
    assert any("other_device" in r for r in refusals(svc))
    own = callback(client, params)  # the victim's own callback still works
    assert own.status_code == 303, own.text
    assert [a.mac for a in svc.gate.authorised()] == [PHONE_MAC]


def test_an_error_callback_from_another_device_cannot_cancel_the_login(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client))
    cancel = other_device(client).get("/callback?" + urlencode({"error": "access_denied", "state": params["state"]}),
                                      headers=HOST)
    assert cancel.status_code == 400
    assert callback(client, params).status_code == 303
    assert [a.mac for a in svc.gate.authorised()] == [PHONE_MAC]


def test_an_error_callback_from_the_device_itself_spends_the_attempt(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client))
    client.get("/callback?" + urlencode({"error": "access_denied", "state": params["state"]}), headers=HOST)
    again = callback(client, params)  # a forged "success" after the visitor cancelled finds nothing
    assert again.status_code == 400 and svc.gate.authorised() == []


def test_the_same_device_in_another_browser_may_finish_the_login(portal):
    client, svc = portal
    with requests.Session() as http:
        params = login_as(http, start(client))
    other_browser = client.application.test_client()
    other_browser.environ_base["REMOTE_ADDR"] = PHONE_IP  # same phone, no cookie of the first browser
    assert callback(other_browser, params).status_code == 303


def test_claim_is_once_and_only_for_the_owner(tmp_path):
    store = AttemptStore(tmp_path / "a.sqlite")
    store.start(Attempt(state="s1", nonce="n", code_verifier="v", client_ip=PHONE_IP, lang="th", created=time.time()))
    assert store.claim("s1", OTHER_IP, same_browser=False) == (None, "other_device")
    assert store.claim("s1", OTHER_IP, same_browser=False) == (None, "other_device")  # still there
    attempt, why = store.claim("s1", PHONE_IP, same_browser=False)
    assert attempt is not None and attempt.client_ip == PHONE_IP and why == ""
    assert store.claim("s1", PHONE_IP, same_browser=True) == (None, "unknown_or_used")
    assert store.claim("nope", PHONE_IP, same_browser=True) == (None, "unknown_or_used")
