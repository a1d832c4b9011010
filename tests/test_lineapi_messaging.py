"""push_text (line-bot-sdk v3) against the sandbox's Messaging API on loopback."""
from __future__ import annotations

import uuid

import pytest
import requests

from lineapi.client import LineError
from lineapi.messaging import MAX_ATTEMPTS, push_text
from lineapi.sandbox import SandboxUser
from lineapi.testing import running_sandbox
from base.config import LineConfig

CHANNEL_ID = "2000000001"
SECRET = "0123456789abcdef0123456789abcdef"
FRIEND = SandboxUser("U" + "f" * 32, "Friend", None, is_friend=True)
STRANGER = SandboxUser("U" + "e" * 32, "Stranger", None, is_friend=False)


@pytest.fixture
def sandbox():
    with running_sandbox(channel_id=CHANNEL_ID, channel_secret=SECRET, messaging_access_token="oa-token",
                         users=[FRIEND, STRANGER]) as sb:
        yield sb


def cfg_for(url: str, **over) -> LineConfig:
    values = dict(channel_id=CHANNEL_ID, channel_secret=SECRET, login_base_url=url, api_base_url=url,
                  messaging_base_url=url, messaging_access_token="oa-token", http_timeout_seconds=2)
    values.update(over)
    return LineConfig(**values)


def test_push_is_received_with_a_retry_key(sandbox):
    push_text(cfg_for(sandbox.url), FRIEND.user_id, "ยินดีต้อนรับ / Welcome")
    pushes = sandbox.state.list_pushes()
    assert len(pushes) == 1
    p = pushes[0]
    assert p["to"] == FRIEND.user_id and p["messages"] == [{"type": "text", "text": "ยินดีต้อนรับ / Welcome"}]
    assert uuid.UUID(p["retry_key"]) and p["delivered"] is True
    # Same data through the sandbox-only HTTP endpoint.
    seen = requests.get(sandbox.url + "/sandbox/pushes", timeout=10).json()
    assert seen["pushes"][0]["request_id"] == p["request_id"]
    assert seen["attempts"] == [{"retry_key": p["retry_key"], "status": 200}]


def test_push_to_a_non_friend_is_accepted_but_not_delivered(sandbox):
    push_text(cfg_for(sandbox.url), STRANGER.user_id, "hello")
    assert sandbox.state.list_pushes()[0]["delivered"] is False


def test_duplicate_retry_key_gets_409_and_sends_once(sandbox):
    key = str(uuid.uuid4())
    body = {"to": FRIEND.user_id, "messages": [{"type": "text", "text": "once"}]}
    headers = {"Authorization": "Bearer oa-token", "X-Line-Retry-Key": key}
    first = requests.post(sandbox.url + "/v2/bot/message/push", json=body, headers=headers, timeout=10)
    assert first.status_code == 200 and len(first.json()["sentMessages"]) == 1
    again = requests.post(sandbox.url + "/v2/bot/message/push", json=body, headers=headers, timeout=10)
    assert again.status_code == 409
    assert again.json() == {"message": "The retry key is already accepted",
                            "sentMessages": first.json()["sentMessages"]}
    assert again.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    # push_text with the same key: LINE says "already accepted", which is success, and nothing is sent.
    push_text(cfg_for(sandbox.url), FRIEND.user_id, "once", retry_key=key)
    assert len(sandbox.state.list_pushes()) == 1


def test_500_then_retry_with_the_same_key(sandbox):
    sandbox.state.add_fault("push", "500", count=1)
    push_text(cfg_for(sandbox.url), FRIEND.user_id, "retry me")
    attempts = sandbox.state.list_push_attempts()
    assert [a["status"] for a in attempts] == [500, 200]
    assert attempts[0]["retry_key"] == attempts[1]["retry_key"]
    assert len(sandbox.state.list_pushes()) == 1


def test_accepted_but_500_is_not_sent_twice(sandbox):
    sandbox.state.add_fault("push", "500-accepted", count=1)
    push_text(cfg_for(sandbox.url), FRIEND.user_id, "maybe sent")
    assert [a["status"] for a in sandbox.state.list_push_attempts()] == [500, 409]
    assert len(sandbox.state.list_pushes()) == 1


def test_timeout_then_retry(sandbox):
    sandbox.state.add_fault("push", "hang-accepted", count=1, seconds=20)
    push_text(cfg_for(sandbox.url, http_timeout_seconds=0.5), FRIEND.user_id, "slow")
    pushes = sandbox.state.list_pushes()
    assert len(pushes) == 1
    statuses = [a["status"] for a in sandbox.state.list_push_attempts()]
    assert 409 in statuses  # the retry found the first, timed-out attempt already accepted


def test_gives_up_after_repeated_5xx(sandbox):
    sandbox.state.add_fault("push", "500", count=MAX_ATTEMPTS)
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url), FRIEND.user_id, "never")
    assert err.value.kind == "server" and err.value.status == 500
    assert len(sandbox.state.list_push_attempts()) == MAX_ATTEMPTS
    assert sandbox.state.list_pushes() == []


def test_gives_up_after_repeated_timeouts(sandbox):
    sandbox.state.add_fault("push", "hang", count=MAX_ATTEMPTS, seconds=20)
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url, http_timeout_seconds=0.3), FRIEND.user_id, "never")
    assert err.value.kind == "timeout"
    assert sandbox.state.list_pushes() == []


def test_4xx_is_not_retried(sandbox):
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url), "not-a-user-id", "hi")
    assert err.value.kind == "invalid" and err.value.status == 400 and "to" in str(err.value)
    assert [a["status"] for a in sandbox.state.list_push_attempts()] == [400]
    sandbox.state.add_fault("push", "429")
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url), FRIEND.user_id, "hi")
    assert err.value.status == 429
    assert len(sandbox.state.list_push_attempts()) == 2


def test_wrong_channel_token_is_refused_without_leaking_it(sandbox):
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url, messaging_access_token="stolen-or-stale"), FRIEND.user_id, "hi")
    assert err.value.kind == "invalid" and err.value.status == 401
    assert "stolen-or-stale" not in str(err.value)


@pytest.mark.parametrize("kwargs", [
    dict(text=""), dict(text="x" * 5001), dict(user_id=""), dict(retry_key="not-a-uuid"),
])
def test_bad_input_is_refused_before_any_request(sandbox, kwargs):
    args = dict(user_id=FRIEND.user_id, text="hi")
    args.update(kwargs)
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url), **args)
    assert err.value.kind == "invalid"
    assert sandbox.state.list_push_attempts() == []


def test_no_messaging_token_configured(sandbox):
    with pytest.raises(LineError) as err:
        push_text(cfg_for(sandbox.url, messaging_access_token=""), FRIEND.user_id, "hi")
    assert err.value.kind == "invalid" and "messaging_access_token" in str(err.value)


def test_sandbox_validates_push_bodies_like_line(sandbox):
    url = sandbox.url + "/v2/bot/message/push"
    auth = {"Authorization": "Bearer oa-token"}
    cases = [
        ({"messages": [{"type": "text", "text": "x"}]}, "to"),
        ({"to": FRIEND.user_id, "messages": []}, "messages"),
        ({"to": FRIEND.user_id, "messages": [{"type": "text", "text": "x"}] * 6}, "messages"),
        ({"to": FRIEND.user_id, "messages": [{"type": "bogus"}]}, "messages[0].type"),
        ({"to": FRIEND.user_id, "messages": [{"type": "text"}]}, "messages[0].text"),
    ]
    for body, prop in cases:
        r = requests.post(url, json=body, headers=auth, timeout=10)
        assert r.status_code == 400, body
        assert r.json()["message"].startswith("The request body has")
        assert prop in [d["property"] for d in r.json()["details"]]
    r = requests.post(url, data="not json", headers=dict(auth, **{"Content-Type": "application/json"}), timeout=10)
    assert r.status_code == 400
    r = requests.post(url, json=cases[0][0], headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401
    r = requests.post(url, json={"to": FRIEND.user_id, "messages": [{"type": "text", "text": "x"}]},
                      headers=dict(auth, **{"X-Line-Retry-Key": "123"}), timeout=10)
    assert r.status_code == 400
    assert sandbox.state.list_pushes() == []
