"""The sandbox's own behaviour: LINE's validation and error shapes, state, faults, the CLI."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from lineapi import endpoints
from lineapi.client import LineLogin, new_pkce, new_token
from lineapi.sandbox import SandboxUser, create_sandbox_app
from lineapi.testing import FakeClock, LoginForm, login_as, running_sandbox
from base.config import LineConfig

CHANNEL_ID = "2000000001"
SECRET = "0123456789abcdef0123456789abcdef"
CALLBACK = "http://portal.test/cb"
ALICE = SandboxUser("U" + "a" * 32, "Alice <script>", None)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandbox():
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE]) as sb:
        yield sb


def authorize_query(**over) -> dict[str, str]:
    _, challenge = new_pkce()
    q = {"response_type": "code", "client_id": CHANNEL_ID, "redirect_uri": CALLBACK, "state": "abc123",
         "scope": "profile openid", "nonce": "n1", "code_challenge": challenge, "code_challenge_method": "S256"}
    q.update(over)
    return {k: v for k, v in q.items() if v is not None}


def get_authorize(sb, **over) -> requests.Response:
    return requests.get(sb.url + endpoints.AUTHORIZE, params=authorize_query(**over), allow_redirects=False,
                        timeout=10)


def test_login_page_is_a_plain_form_with_every_parameter(sandbox):
    page = get_authorize(sandbox, bot_prompt="aggressive")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    form = LoginForm(page.text)
    assert form.action == endpoints.AUTHORIZE
    assert form.hidden == authorize_query(bot_prompt="aggressive", code_challenge=form.hidden["code_challenge"])
    assert form.users == [ALICE.user_id] and form.checkboxes == ["sandbox_add_friend"]
    assert set(form.buttons) == {"allow", "cancel", "autologin_fail"}
    assert "Alice &lt;script&gt;" in page.text  # escaped
    assert "sandbox_add_friend" not in get_authorize(sandbox).text  # no bot_prompt, no offer


@pytest.mark.parametrize("over", [dict(client_id="1999999999"), dict(client_id=None), dict(redirect_uri=None),
                                  dict(redirect_uri="not a url"), dict(redirect_uri="http://x/cb#frag")])
def test_bad_client_or_redirect_uri_is_not_redirected(sandbox, over):
    r = get_authorize(sandbox, **over)
    assert r.status_code == 400 and "Location" not in r.headers


@pytest.mark.parametrize("over, error", [
    (dict(response_type="token"), "UNSUPPORTED_RESPONSE_TYPE"),
    (dict(scope="profile"), "INVALID_SCOPE"),
    (dict(scope="openid"), "INVALID_SCOPE"),
    (dict(scope="profile openid friends"), "INVALID_SCOPE"),
    (dict(state=None), "INVALID_REQUEST"),
    (dict(code_challenge_method="plain"), "INVALID_REQUEST"),
    (dict(code_challenge=None), "INVALID_REQUEST"),
    (dict(bot_prompt="always"), "INVALID_REQUEST"),
    (dict(prompt="none"), "LOGIN_REQUIRED"),
])
def test_other_bad_requests_are_redirected_with_an_error(sandbox, over, error):
    r = get_authorize(sandbox, **over)
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    q = parse_qs(urlsplit(location).query)
    assert q["error"] == [error] and q["error_description"][0]
    assert q.get("state") == (None if "state" in over else ["abc123"])


def test_post_checks_the_same_parameters(sandbox):
    fields = authorize_query(client_id="1999999999", sandbox_user=ALICE.user_id, sandbox_action="allow")
    r = requests.post(sandbox.url + endpoints.AUTHORIZE, data=fields, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and "Location" not in r.headers
    for bad in (dict(sandbox_user="U" + "0" * 32), dict(sandbox_action="maybe")):
        fields = authorize_query(sandbox_user=ALICE.user_id, sandbox_action="allow")
        fields.update(bad)
        r = requests.post(sandbox.url + endpoints.AUTHORIZE, data=fields, allow_redirects=False, timeout=10)
        assert r.status_code == 400


def _tokens(sb, nonce="n1"):
    verifier, challenge = new_pkce()
    url = sb.url + endpoints.AUTHORIZE + "?" + urlencode(authorize_query(code_challenge=challenge, nonce=nonce))
    with requests.Session() as http:
        cb = login_as(http, url, ALICE.user_id)
    r = requests.post(sb.url + endpoints.TOKEN, data={
        "grant_type": "authorization_code", "code": cb["code"], "redirect_uri": CALLBACK, "client_id": CHANNEL_ID,
        "client_secret": SECRET, "code_verifier": verifier}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_token_response_shape(sandbox):
    body = _tokens(sandbox)
    assert set(body) == {"access_token", "expires_in", "id_token", "refresh_token", "scope", "token_type"}
    assert body["expires_in"] == 2592000 and body["token_type"] == "Bearer" and body["scope"] == "profile openid"


@pytest.mark.parametrize("change, description", [
    (dict(id_token="garbage"), "Invalid IdToken."),
    (dict(client_id="1999999999"), "Invalid IdToken Audience."),
    (dict(nonce="other"), "Invalid IdToken Nonce."),
    (dict(user_id="U" + "b" * 32), "Invalid IdToken Subject Identifier."),
])
def test_verify_endpoint_errors_are_lines(sandbox, change, description):
    token = _tokens(sandbox)["id_token"]
    data = {"id_token": token, "client_id": CHANNEL_ID, "nonce": "n1", "user_id": ALICE.user_id}
    data.update(change)
    r = requests.post(sandbox.url + endpoints.VERIFY, data=data, timeout=10)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": description}


def test_verify_endpoint_expiry_and_issuer():
    clock = FakeClock(time.time())
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE], clock=clock) as sb:
        token = _tokens(sb)["id_token"]
        clock.advance(3601)
        r = requests.post(sb.url + endpoints.VERIFY, data={"id_token": token, "client_id": CHANNEL_ID}, timeout=10)
        assert r.json()["error_description"] == "IdToken expired."
        foreign = jwt.encode({"iss": "https://elsewhere", "sub": ALICE.user_id, "aud": CHANNEL_ID,
                              "exp": int(clock.now) + 60, "iat": int(clock.now)}, SECRET, algorithm="HS256")
        r = requests.post(sb.url + endpoints.VERIFY, data={"id_token": foreign, "client_id": CHANNEL_ID}, timeout=10)
        assert r.json()["error_description"] == "Invalid IdToken Issuer."


def test_access_token_verify_and_expiry():
    clock = FakeClock(time.time())
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE], clock=clock) as sb:
        access = _tokens(sb)["access_token"]
        r = requests.get(sb.url + endpoints.VERIFY, params={"access_token": access}, timeout=10)
        assert r.json() == {"scope": "profile openid", "client_id": CHANNEL_ID, "expires_in": 2592000}
        clock.advance(2592000)
        r = requests.get(sb.url + endpoints.VERIFY, params={"access_token": access}, timeout=10)
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_request", "error_description": "access token expired"}
        r = requests.get(sb.url + endpoints.PROFILE, headers={"Authorization": f"Bearer {access}"}, timeout=10)
        assert r.status_code == 401


def test_profile_and_friendship_need_a_valid_bearer(sandbox):
    for path in (endpoints.PROFILE, endpoints.FRIENDSHIP):
        assert requests.get(sandbox.url + path, timeout=10).status_code == 401
        r = requests.get(sandbox.url + path, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert r.status_code == 401 and r.json() == {"message": "invalid token"}
    access = _tokens(sandbox)["access_token"]
    r = requests.get(sandbox.url + endpoints.PROFILE, headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert r.json() == {"userId": ALICE.user_id, "displayName": ALICE.display_name}  # no picture: no key
    assert r.headers["x-line-request-id"]


def test_token_endpoint_rejects_malformed_requests(sandbox):
    base = {"client_id": CHANNEL_ID, "client_secret": SECRET}
    r = requests.post(sandbox.url + endpoints.TOKEN, data=dict(base, grant_type="password"), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = requests.post(sandbox.url + endpoints.TOKEN, data=dict(base, grant_type="authorization_code"), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_missing_code_verifier_is_refused(sandbox):
    verifier, challenge = new_pkce()
    url = sandbox.url + endpoints.AUTHORIZE + "?" + urlencode(authorize_query(code_challenge=challenge))
    with requests.Session() as http:
        cb = login_as(http, url, ALICE.user_id)
    r = requests.post(sandbox.url + endpoints.TOKEN, data={
        "grant_type": "authorization_code", "code": cb["code"], "redirect_uri": CALLBACK, "client_id": CHANNEL_ID,
        "client_secret": SECRET}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_a_code_is_exchanged_once_even_under_concurrency(sandbox):
    verifier, challenge = new_pkce()
    url = sandbox.url + endpoints.AUTHORIZE + "?" + urlencode(authorize_query(code_challenge=challenge))
    with requests.Session() as http:
        cb = login_as(http, url, ALICE.user_id)
    data = {"grant_type": "authorization_code", "code": cb["code"], "redirect_uri": CALLBACK,
            "client_id": CHANNEL_ID, "client_secret": SECRET, "code_verifier": verifier}
    barrier = threading.Barrier(16)

    def race(_):
        barrier.wait(timeout=10)
        return requests.post(sandbox.url + endpoints.TOKEN, data=data, timeout=10).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(race, range(16)))
    assert sorted(statuses) == [200] + [400] * 15


def test_many_logins_in_parallel_all_succeed(sandbox):
    cfg = LineConfig(channel_id=CHANNEL_ID, channel_secret=SECRET, login_base_url=sandbox.url,
                     api_base_url=sandbox.url)

    def one(_):
        line = LineLogin(cfg)
        state, nonce = new_token(), new_token()
        verifier, challenge = new_pkce()
        url = line.authorize_url(redirect_uri=CALLBACK, state=state, nonce=nonce, code_challenge=challenge,
                                 bot_prompt="none")
        with requests.Session() as http:
            cb = login_as(http, url, ALICE.user_id)
        assert cb["state"] == state
        return line.verify_id_token(line.exchange_code(cb["code"], CALLBACK, verifier).id_token, nonce).sub

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(40))) == [ALICE.user_id] * 40


def test_fault_and_user_endpoints(sandbox):
    url = sandbox.url
    assert requests.post(url + "/sandbox/faults", json={"push": "explode"}, timeout=10).status_code == 400
    assert requests.post(url + "/sandbox/faults", json={"nowhere": "500"}, timeout=10).status_code == 400
    assert requests.post(url + "/sandbox/faults", json={"token": "500-accepted"}, timeout=10).status_code == 400
    assert requests.post(url + "/sandbox/faults", json={"push": "500", "count": 0}, timeout=10).status_code == 400
    assert requests.post(url + "/sandbox/faults", data="x", timeout=10).status_code == 400
    r = requests.post(url + "/sandbox/faults", json={"profile": "500", "count": 2}, timeout=10)
    assert r.status_code == 200 and r.json()["faults"]["profile"][0]["remaining"] == 2
    for _ in range(2):
        assert requests.get(url + endpoints.PROFILE, timeout=10).status_code == 500
    assert requests.get(url + endpoints.PROFILE, timeout=10).status_code == 401  # fault used up
    requests.post(url + "/sandbox/faults", json={"profile": "hang", "seconds": 60}, timeout=10)
    hung = ThreadPoolExecutor(1).submit(requests.get, url + endpoints.PROFILE, timeout=30)
    deadline = time.monotonic() + 10
    while requests.get(url + "/sandbox/faults", timeout=10).json()["faults"] and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    assert requests.delete(url + "/sandbox/faults", timeout=10).status_code == 200
    assert hung.result(timeout=10).status_code == 500 and time.monotonic() - started < 5  # released at once

    user = {"user_id": "U" + "c" * 32, "display_name": "Carol", "picture_url": None, "is_friend": True}
    assert requests.post(url + "/sandbox/users", json=user, timeout=10).json() == user
    assert user in requests.get(url + "/sandbox/users", timeout=10).json()["users"]
    assert requests.post(url + "/sandbox/users", json=dict(user, user_id="carol"), timeout=10).status_code == 400


def test_sandbox_user_validation():
    with pytest.raises(ValueError):
        SandboxUser("U123", "Short id")
    with pytest.raises(ValueError):
        SandboxUser("U" + "a" * 32, "")
    with pytest.raises(ValueError):
        create_sandbox_app(channel_id="", channel_secret=SECRET)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_the_configured_channel(tmp_path):
    config = tmp_path / "skillspot.toml"
    shutil.copy(REPO / "examples" / "skillspot.toml", config)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skillspot.cli", "--config", str(config), "line-sandbox",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(base + endpoints.AUTHORIZE, params=authorize_query(), timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "line-sandbox did not start"
                time.sleep(0.1)
        assert r.status_code == 200  # the example config's channel_id is accepted
        assert get_status(base, client_id="1999999999") == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert f"listening on http://127.0.0.1:{port}" in out
    assert "/oauth2/v2.1/authorize" in out


def get_status(base: str, **over) -> int:
    return requests.get(base + endpoints.AUTHORIZE, params=authorize_query(**over), allow_redirects=False,
                        timeout=5).status_code


def test_cli_reports_a_busy_port(tmp_path):
    import socket
    config = tmp_path / "skillspot.toml"
    shutil.copy(REPO / "examples" / "skillspot.toml", config)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "skillspot.cli", "--config", str(config), "line-sandbox",
                               "--port", str(port)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode != 0 and "cannot listen" in done.stderr and "--port" in done.stderr
