"""The real LINE Login client against the sandbox on a loopback HTTP server."""
from __future__ import annotations

import base64
import hashlib
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from lineapi.client import (IdClaims, LineError, LineLogin, Profile, TokenSet, callback_error, new_pkce,
                            new_token)
from lineapi.sandbox import SandboxUser
from lineapi.testing import FakeClock, login_as, running_sandbox
from base.config import LineConfig

CHANNEL_ID = "2000000001"
SECRET = "0123456789abcdef0123456789abcdef"
OTHER_SECRET = "fedcba9876543210fedcba9876543210"
ISSUER = "https://access.line.me"
CALLBACK = "http://portal.test:8080/line/callback"
ALICE = SandboxUser("U" + "a" * 32, "Alice", "https://profile.line-scdn.net/alice", is_friend=False)
BOB = SandboxUser("U" + "b" * 32, "Bob", None, is_friend=True)


def cfg_for(url: str, **overrides) -> LineConfig:
    values = dict(channel_id=CHANNEL_ID, channel_secret=SECRET, login_base_url=url, api_base_url=url,
                  messaging_base_url=url, messaging_access_token="sandbox-token", http_timeout_seconds=5)
    values.update(overrides)
    return LineConfig(**values)


@pytest.fixture
def sandbox():
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE, BOB]) as sb:
        yield sb


@pytest.fixture
def http():
    with requests.Session() as s:
        yield s


class Attempt:
    """What the portal keeps per login attempt."""

    def __init__(self, line: LineLogin, bot_prompt: str = "aggressive", redirect_uri: str = CALLBACK, **kw):
        self.state, self.nonce = new_token(), new_token()
        self.verifier, challenge = new_pkce()
        self.redirect_uri = redirect_uri
        self.url = line.authorize_url(redirect_uri=redirect_uri, state=self.state, nonce=self.nonce,
                                      code_challenge=challenge, bot_prompt=bot_prompt, **kw)


def test_pkce_and_tokens_have_the_documented_shape():
    verifier, challenge = new_pkce()
    assert 43 <= len(verifier) <= 128 and all(c.isalnum() or c in "-._~" for c in verifier)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected
    assert new_pkce()[0] != verifier
    token = new_token()
    assert token.isalnum() and len(token) >= 32 and new_token() != token


def test_authorize_url_carries_the_documented_parameters():
    line = LineLogin(cfg_for("https://access.line.me"))
    url = line.authorize_url(redirect_uri="https://wifi.example/cb?box=1", state="abc123", nonce="n0nce",
                             code_challenge="c" * 43, bot_prompt="normal", ui_locales="th en",
                             disable_auto_login=True, prompt="consent")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "access.line.me", "/oauth2/v2.1/authorize")
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert q == {"response_type": "code", "client_id": CHANNEL_ID, "redirect_uri": "https://wifi.example/cb?box=1",
                 "state": "abc123", "scope": "openid profile", "nonce": "n0nce", "code_challenge": "c" * 43,
                 "code_challenge_method": "S256", "bot_prompt": "normal", "ui_locales": "th en",
                 "disable_auto_login": "true", "prompt": "consent"}
    assert "scope=openid%20profile" in parts.query  # %20, as in LINE's examples
    none = line.authorize_url(redirect_uri=CALLBACK, state="s1", nonce="n", code_challenge="c" * 43, bot_prompt="none")
    assert "bot_prompt" not in none and "disable_auto_login" not in none and "prompt=" not in none
    with pytest.raises(ValueError):
        line.authorize_url(redirect_uri=CALLBACK, state="s1", nonce="n", code_challenge="c" * 43, bot_prompt="always")
    with pytest.raises(ValueError):
        line.authorize_url(redirect_uri=CALLBACK, state="not-alnum!", nonce="n", code_challenge="c" * 43,
                           bot_prompt="none")


def test_full_code_flow_with_pkce(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line, bot_prompt="none")
    cb = login_as(http, attempt.url, ALICE.user_id)
    assert callback_error(cb) is None
    assert cb["state"] == attempt.state and "friendship_status_changed" not in cb
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    assert isinstance(tokens, TokenSet)
    assert tokens.expires_in == 2592000 and tokens.scope == "profile openid" and tokens.refresh_token
    claims = line.verify_id_token(tokens.id_token, attempt.nonce)
    assert isinstance(claims, IdClaims)
    assert (claims.sub, claims.name, claims.picture, claims.nonce, claims.amr) == (
        ALICE.user_id, "Alice", ALICE.picture_url, attempt.nonce, ["pwd"])
    assert claims.exp == claims.iat + 3600 and abs(claims.iat - time.time()) < 60
    assert line.profile(tokens.access_token) == Profile(ALICE.user_id, "Alice", ALICE.picture_url)
    assert line.friendship(tokens.access_token) is False
    line.revoke(tokens.access_token)
    with pytest.raises(LineError) as err:
        line.profile(tokens.access_token)
    assert err.value.kind == "invalid" and err.value.status == 401


def test_user_without_picture_and_friend_flag(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, BOB.user_id)
    # Bob already is a friend: no offer, so LINE adds no friendship_status_changed.
    assert "friendship_status_changed" not in cb
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    claims = line.verify_id_token(tokens.id_token, attempt.nonce)
    assert claims.picture is None and claims.name == "Bob"
    assert line.profile(tokens.access_token).picture_url is None
    assert line.friendship(tokens.access_token) is True


@pytest.mark.parametrize("bot_prompt", ["aggressive", "normal"])
@pytest.mark.parametrize("tick", [True, False])
def test_bot_prompt_friend_offer(sandbox, http, bot_prompt, tick):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line, bot_prompt=bot_prompt)
    page = http.get(attempt.url, timeout=10).text
    assert 'name="sandbox_add_friend"' in page and ("separate" in page) == (bot_prompt == "aggressive")
    cb = login_as(http, attempt.url, ALICE.user_id, add_friend=tick)
    assert cb["friendship_status_changed"] == ("true" if tick else "false")
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    assert line.friendship(tokens.access_token) is tick


def test_cancel_is_denied(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id, action="cancel")
    assert "code" not in cb and cb["state"] == attempt.state
    err = callback_error(cb)
    assert err is not None and err.kind == "denied" and err.code == "ACCESS_DENIED"


def test_callback_error_mapping():
    assert callback_error({"code": "x", "state": "y"}) is None
    assert callback_error({"error": "access_denied"}).kind == "denied"
    assert callback_error({"error": "SERVER_ERROR"}).kind == "server"
    bad = callback_error({"error": "INVALID_SCOPE", "error_description": "nope\r\n<script>" + "x" * 500})
    assert bad.kind == "invalid" and "\n" not in str(bad) and len(str(bad)) < 300
    assert callback_error({"error": "WHATEVER"}).kind == "invalid"


def test_replayed_code_is_refused_and_revokes_the_first_tokens(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    with pytest.raises(LineError) as err:
        line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    assert err.value.kind == "invalid" and err.value.code == "invalid_grant" and err.value.status == 400
    with pytest.raises(LineError):
        line.profile(tokens.access_token)


def test_wrong_verifier_is_refused(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    other_verifier, _ = new_pkce()
    with pytest.raises(LineError) as err:
        line.exchange_code(cb["code"], attempt.redirect_uri, other_verifier)
    assert err.value.kind == "invalid" and err.value.code == "invalid_grant"
    assert other_verifier not in str(err.value) and SECRET not in str(err.value)


def test_wrong_redirect_uri_is_refused(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    with pytest.raises(LineError) as err:
        line.exchange_code(cb["code"], CALLBACK + "/other", attempt.verifier)
    assert err.value.code == "invalid_grant" and "redirect_uri" in str(err.value)


def test_wrong_client_secret_is_refused(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    with pytest.raises(LineError) as err:
        LineLogin(cfg_for(sandbox.url, channel_secret=OTHER_SECRET)).exchange_code(
            cb["code"], attempt.redirect_uri, attempt.verifier)
    assert err.value.code == "invalid_client" and OTHER_SECRET not in str(err.value)


def test_autologin_failure_code_cannot_be_exchanged(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id, action="autologin_fail")
    assert cb["code"] and cb["state"] == attempt.state and callback_error(cb) is None
    with pytest.raises(LineError) as err:
        line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    assert err.value.code == "invalid_grant"


def test_redirect_uri_query_is_kept(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line, redirect_uri=CALLBACK + "?box=dsd-bkk-01&lang=th")
    page = http.get(attempt.url, timeout=10)
    from lineapi.testing import LoginForm
    form = LoginForm(page.text)
    fields = dict(form.hidden, sandbox_user=ALICE.user_id, sandbox_action="allow")
    resp = http.post(sandbox.url + form.action, data=fields, allow_redirects=False, timeout=10)
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?box=dsd-bkk-01&lang=th&code=")
    q = parse_qs(urlsplit(location).query)
    tokens = line.exchange_code(q["code"][0], attempt.redirect_uri, attempt.verifier)
    assert line.verify_id_token(tokens.id_token, attempt.nonce).sub == ALICE.user_id


def test_code_expires_after_ten_minutes(http):
    clock = FakeClock(time.time())
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE], clock=clock) as sb:
        line = LineLogin(cfg_for(sb.url))
        attempt = Attempt(line)
        cb = login_as(http, attempt.url, ALICE.user_id)
        clock.advance(601)
        with pytest.raises(LineError) as err:
            line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
        assert err.value.code == "invalid_grant" and "expired" in str(err.value)
        attempt = Attempt(line)
        cb = login_as(http, attempt.url, ALICE.user_id)
        clock.advance(599)
        line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)


# --- ID token verification --------------------------------------------------------------------
def _claims(**over):
    now = int(time.time())
    c = {"iss": ISSUER, "sub": ALICE.user_id, "aud": CHANNEL_ID, "exp": now + 3600, "iat": now,
         "nonce": "the-nonce", "amr": ["pwd"], "name": "Alice"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def test_verify_accepts_a_correct_token():
    line = LineLogin(cfg_for("http://127.0.0.1:9"))
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")
    claims = line.verify_id_token(token, "the-nonce")
    assert claims.sub == ALICE.user_id and claims.picture is None


@pytest.mark.parametrize("token_factory, why", [
    (lambda: jwt.encode(_claims(), OTHER_SECRET, algorithm="HS256"), "signature"),
    (lambda: jwt.encode(_claims(aud="1999999999"), SECRET, algorithm="HS256"), "aud"),
    (lambda: jwt.encode(_claims(iss="https://evil.example"), SECRET, algorithm="HS256"), "iss"),
    (lambda: jwt.encode(_claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256"), "expired"),
    (lambda: jwt.encode(_claims(iat=int(time.time()) + 600), SECRET, algorithm="HS256"), "future"),
    (lambda: jwt.encode(_claims(nonce="another-nonce"), SECRET, algorithm="HS256"), "nonce"),
    (lambda: jwt.encode(_claims(nonce=None), SECRET, algorithm="HS256"), "nonce"),
    (lambda: jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"), "sub"),
    (lambda: jwt.encode(_claims(), None, algorithm="none"), "alg none"),
    (lambda: "not.a.jwt", "garbage"),
])
def test_verify_rejects_bad_tokens(token_factory, why):
    line = LineLogin(cfg_for("http://127.0.0.1:9"))
    with pytest.raises(LineError) as err:
        line.verify_id_token(token_factory(), "the-nonce")
    assert err.value.kind == "token", why
    assert SECRET not in str(err.value)


def test_expired_token_from_the_sandbox_clock(http):
    # The sandbox's clock is two hours behind: its ID token expired an hour ago by our clock.
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE],
                         clock=lambda: time.time() - 7200) as sb:
        line = LineLogin(cfg_for(sb.url))
        attempt = Attempt(line)
        cb = login_as(http, attempt.url, ALICE.user_id)
        tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
        with pytest.raises(LineError) as err:
            line.verify_id_token(tokens.id_token, attempt.nonce)
        assert err.value.kind == "token" and "expired" in str(err.value)


def test_wrong_nonce_in_the_flow(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    with pytest.raises(LineError) as err:
        line.verify_id_token(tokens.id_token, new_token())
    assert err.value.kind == "token" and "nonce" in str(err.value)


def test_token_signed_by_another_channel_secret_is_rejected(http):
    # A sandbox "LINE" that signs with a secret other than ours: a forged token.
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=OTHER_SECRET, users=[ALICE]) as sb:
        forger = LineLogin(cfg_for(sb.url, channel_secret=OTHER_SECRET))
        attempt = Attempt(forger)
        cb = login_as(http, attempt.url, ALICE.user_id)
        tokens = forger.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
        with pytest.raises(LineError) as err:
            LineLogin(cfg_for(sb.url)).verify_id_token(tokens.id_token, attempt.nonce)
        assert err.value.kind == "token" and "signature" in str(err.value)


def test_wrong_issuer_from_the_sandbox(http):
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, users=[ALICE],
                         issuer="https://not-line.example") as sb:
        line = LineLogin(cfg_for(sb.url))
        attempt = Attempt(line)
        cb = login_as(http, attempt.url, ALICE.user_id)
        tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
        with pytest.raises(LineError) as err:
            line.verify_id_token(tokens.id_token, attempt.nonce)
        assert err.value.kind == "token" and "iss" in str(err.value)


def test_sandbox_id_token_verifies_with_pyjwt_like_lines(sandbox, http):
    """LINE's web-login ID token: HS256 with the channel secret, header {alg, typ}, no kid."""
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    assert jwt.get_unverified_header(tokens.id_token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(tokens.id_token, SECRET, algorithms=["HS256"], audience=CHANNEL_ID, issuer=ISSUER)
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nonce", "amr", "name", "picture"}
    assert claims["aud"] == CHANNEL_ID and isinstance(claims["aud"], str)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tokens.id_token, OTHER_SECRET, algorithms=["HS256"], audience=CHANNEL_ID, issuer=ISSUER)
    # The same token through LINE's verify endpoint (here the sandbox's).
    ok = http.post(sandbox.url + "/oauth2/v2.1/verify",
                   data={"id_token": tokens.id_token, "client_id": CHANNEL_ID, "nonce": attempt.nonce,
                         "user_id": ALICE.user_id}, timeout=10)
    assert ok.status_code == 200 and ok.json() == claims


# --- transport failures ------------------------------------------------------------------------
def test_token_timeout(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url, http_timeout_seconds=0.5))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    sandbox.state.add_fault("token", "hang", seconds=20)
    started = time.monotonic()
    with pytest.raises(LineError) as err:
        line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    assert err.value.kind == "timeout" and time.monotonic() - started < 10


@pytest.mark.parametrize("call", ["profile", "friendship"])
def test_server_error_and_timeout_on_profile_calls(sandbox, http, call):
    line = LineLogin(cfg_for(sandbox.url, http_timeout_seconds=0.5))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    sandbox.state.add_fault(call, "500")
    with pytest.raises(LineError) as err:
        getattr(line, call)(tokens.access_token)
    assert err.value.kind == "server" and err.value.status == 500
    sandbox.state.add_fault(call, "hang", seconds=20)
    with pytest.raises(LineError) as err:
        getattr(line, call)(tokens.access_token)
    assert err.value.kind == "timeout"
    sandbox.state.clear_faults()
    getattr(line, call)(tokens.access_token)  # and it works again


def test_unreachable_line_is_a_server_error():
    # Port 9 (discard) on loopback: nothing listens there in CI, so the connection is refused.
    line = LineLogin(cfg_for("http://127.0.0.1:9"))
    with pytest.raises(LineError) as err:
        line.exchange_code("code", CALLBACK, new_pkce()[0])
    assert err.value.kind in ("server", "timeout")


def test_refresh_gives_a_new_access_token(sandbox, http):
    line = LineLogin(cfg_for(sandbox.url))
    attempt = Attempt(line)
    cb = login_as(http, attempt.url, ALICE.user_id)
    tokens = line.exchange_code(cb["code"], attempt.redirect_uri, attempt.verifier)
    fresh = line.refresh(tokens.refresh_token)
    assert fresh.access_token != tokens.access_token and fresh.refresh_token == tokens.refresh_token
    assert line.profile(fresh.access_token).user_id == ALICE.user_id
    with pytest.raises(LineError) as err:
        line.refresh("not-a-refresh-token")
    assert err.value.code == "invalid_grant"
