"""A local stand-in for LINE (LINE Login v2.1 + the Messaging API), for tests and the demo.

The Official Account side beyond push (signed webhooks, reply, multicast, narrowcast,
broadcast, rich menus, quota) is in `lineapi.sandbox_oa`, registered on the same app.

It follows LINE's documentation: the same paths (`lineapi.endpoints`), parameters, status codes
and, where LINE documents an error body, that body. Everything lives in memory inside the Flask
app (`app.extensions["line_sandbox"]`, a `SandboxState`), guarded by one lock.

Login page (GET AUTHORIZE) and its form
---------------------------------------
After validating the query as LINE does, GET AUTHORIZE shows a small HTML page with one plain
``<form method="post" action="/oauth2/v2.1/authorize">``. A script can skip the page and POST
the same fields itself:

* every original query parameter, carried as ``<input type="hidden" name=... value=...>``
  (response_type, client_id, redirect_uri, state, scope, nonce, code_challenge, ...);
* ``sandbox_user``: a ``<select>`` of the users' userIds (``U`` + 32 hex digits);
* ``sandbox_action``: the submit buttons: ``allow`` ("Log in"), ``cancel`` ("Cancel") or
  ``autologin_fail`` (LINE's documented auto-login failure: the callback gets a `code` and the
  original `state`, but the code can never be exchanged);
* ``sandbox_add_friend``: a checkbox with value ``1``, present only when ``bot_prompt`` is
  ``normal`` or ``aggressive`` and the chosen user is not yet a friend of the Official Account
  (aggressive: LINE shows it on a separate screen after consent; the sandbox shows one page).

POST AUTHORIZE answers 302 to redirect_uri with ``code`` and ``state`` (plus
``friendship_status_changed=true|false`` only when the add-friend offer was shown), or with
``error=ACCESS_DENIED&error_description=...&state=...`` on cancel. redirect_uri's own query
parameters are kept.

Sandbox-only endpoints (not LINE's)
-----------------------------------
* ``GET /sandbox/pushes``: ``{"pushes": [{"request_id", "to", "messages", "retry_key",
  "received_at", "delivered"}], "attempts": [{"retry_key", "status"}]}``: every push LINE
  would have accepted (``delivered`` is false when the user is not a friend), then every push
  request with the status it got, in order; ``DELETE /sandbox/pushes`` forgets both.
* ``POST /sandbox/faults`` with JSON ``{"<endpoint>": "<mode>", "count": N, "seconds": S}``
  makes the next N calls (default 1) of that endpoint fail. Endpoints: ``push``, ``token``,
  ``verify``, ``profile``, ``friendship``, ``revoke``. Modes: ``500`` (HTTP 500, nothing
  done), ``429``, ``hang`` (no answer for S seconds, default 30, then 500), and for push
  ``500-accepted`` / ``hang-accepted`` (the push is accepted and recorded, but the answer is a
  500 / comes late, as LINE warns can happen). ``GET`` lists pending faults, ``DELETE`` clears
  them and releases every hanging request at once.
* ``GET /sandbox/users``; ``POST /sandbox/users`` with ``{"user_id", "display_name",
  "picture_url", "is_friend"}`` adds or updates one user (e.g. to make a returning friend).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import flask
import jwt
from flask import Flask, Response, jsonify, render_template_string, request

from lineapi import endpoints

USER_ID = re.compile(r"^U[0-9a-f]{32}$")
PUSH_TARGET = re.compile(r"^[UCR][0-9a-f]{32}$")
VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
CODE_TTL = 600  # seconds, LINE: 10 minutes
ACCESS_TOKEN_TTL = 2592000  # 30 days
REFRESH_TTL = 90 * 86400  # counted from the first access token
ID_TOKEN_TTL = 3600
RETRY_KEY_TTL = 86400
KNOWN_SCOPES = {"openid", "profile", "email"}
MESSAGE_TYPES = {"text", "sticker", "image", "video", "audio", "location", "imagemap", "template", "flex",
                 "textV2"}
FAULT_ENDPOINTS = {"push", "token", "verify", "profile", "friendship", "revoke", "reply", "multicast", "narrowcast",
                   "broadcast"}
FAULT_MODES = {"500", "429", "hang", "500-accepted", "hang-accepted"}
AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."


@dataclass
class SandboxUser:
    """A LINE user of the sandbox. `is_friend`: has the linked Official Account as a friend."""

    user_id: str
    display_name: str
    picture_url: str | None = None
    is_friend: bool = False

    def __post_init__(self) -> None:
        if not USER_ID.match(self.user_id):
            raise ValueError(f"user_id {self.user_id!r} must be 'U' followed by 32 lowercase hex digits")
        if not self.display_name:
            raise ValueError("display_name must not be empty")


def default_users() -> list[SandboxUser]:
    """Three demo users: one already a friend of the Official Account, two not."""
    return [
        SandboxUser("U" + hashlib.md5(b"somchai").hexdigest(), "สมชาย ใจดี", "https://profile.line-scdn.net/sandbox-somchai"),
        SandboxUser("U" + hashlib.md5(b"malee").hexdigest(), "Malee S.", None),
        SandboxUser("U" + hashlib.md5(b"friend").hexdigest(), "Niran (already a friend)", None, is_friend=True),
    ]


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    user_id: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    created: float
    used: bool = False
    access_tokens: list[str] = field(default_factory=list)


@dataclass
class _AccessToken:
    user_id: str
    client_id: str
    scope: str
    issued: float
    refresh_token: str
    revoked: bool = False


@dataclass
class _Refresh:
    user_id: str
    client_id: str
    scope: str
    first_issued: float


@dataclass
class _Fault:
    mode: str
    remaining: int
    seconds: float


class SandboxState:
    """The sandbox's memory. Every method takes the lock; tests may call them directly."""

    def __init__(self, *, channel_id: str, channel_secret: str, issuer: str, messaging_access_token: str,
                 users: list[SandboxUser], clock: Callable[[], float]) -> None:
        self.channel_id = channel_id
        self.channel_secret = channel_secret
        self.issuer = issuer
        self.messaging_access_token = messaging_access_token
        self.clock = clock
        self.lock = threading.Lock()
        self.users: dict[str, SandboxUser] = {u.user_id: u for u in users}
        self.codes: dict[str, _Grant] = {}
        self.access_tokens: dict[str, _AccessToken] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.retry_keys: dict[str, tuple[float, str, list[dict]]] = {}
        self.pushes: list[dict] = []
        self.push_attempts: list[dict] = []  # every push request: retry key and the status answered
        self.faults: dict[str, deque[_Fault]] = {}
        self._release = threading.Event()
        # Messaging API beyond push (see lineapi/sandbox_oa.py): webhooks, replies, bulk sends,
        # rich menus, the monthly quota.
        from lineapi.sandbox_oa import OaState
        self.oa = OaState()

    # -- users ---------------------------------------------------------------------------------
    def user(self, user_id: str) -> SandboxUser | None:
        """A copy of one user as they are now, or None."""
        with self.lock:
            u = self.users.get(user_id)
            return replace(u) if u is not None else None

    def put_user(self, user: SandboxUser) -> None:
        with self.lock:
            self.users[user.user_id] = replace(user)

    def list_users(self) -> list[SandboxUser]:
        """Copies of the users, as they are now."""
        with self.lock:
            return [replace(u) for u in self.users.values()]

    # -- faults --------------------------------------------------------------------------------
    def add_fault(self, endpoint: str, mode: str, count: int = 1, seconds: float = 30.0) -> None:
        """Make the next `count` calls of `endpoint` fail with `mode` (see the module doc)."""
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"unknown fault endpoint {endpoint!r}; use one of {sorted(FAULT_ENDPOINTS)}")
        if mode not in FAULT_MODES or (mode.endswith("-accepted") and endpoint != "push"):
            raise ValueError(f"unknown fault mode {mode!r} for {endpoint}; use one of {sorted(FAULT_MODES)} "
                             "(the -accepted modes only for push)")
        if count < 1 or seconds < 0:
            raise ValueError("count must be at least 1 and seconds not negative")
        with self.lock:
            self.faults.setdefault(endpoint, deque()).append(_Fault(mode, count, seconds))

    def take_fault(self, endpoint: str) -> _Fault | None:
        with self.lock:
            queue = self.faults.get(endpoint)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
            return _Fault(fault.mode, 1, fault.seconds)

    def pending_faults(self) -> dict[str, list[dict]]:
        with self.lock:
            return {k: [asdict(f) for f in q] for k, q in self.faults.items() if q}

    def clear_faults(self) -> None:
        """Forget pending faults and wake every request that is hanging now."""
        with self.lock:
            self.faults.clear()
            release, self._release = self._release, threading.Event()
        release.set()

    def hang(self, seconds: float) -> None:
        with self.lock:
            release = self._release
        release.wait(seconds)

    # -- pushes --------------------------------------------------------------------------------
    def list_pushes(self) -> list[dict]:
        """The pushes LINE would have accepted, oldest first."""
        with self.lock:
            return [dict(p) for p in self.pushes]

    def list_push_attempts(self) -> list[dict]:
        """Every push request received: {"retry_key", "status"}, oldest first."""
        with self.lock:
            return [dict(p) for p in self.push_attempts]

    def clear_pushes(self) -> None:
        with self.lock:
            self.pushes.clear()
            self.push_attempts.clear()


def create_sandbox_app(*, channel_id: str, channel_secret: str, issuer: str = "https://access.line.me",
                       messaging_access_token: str = "sandbox-token", users: list[SandboxUser] | None = None,
                       clock: Callable[[], float] = time.time, messaging_channel_secret: str = "",
                       message_quota: int = 300) -> Flask:
    """A Flask app that answers like LINE for one Login channel and one Official Account.

    `messaging_channel_secret` signs webhooks (the Messaging API channel's own secret; default a
    random one, read it from `state.oa.channel_secret`); `message_quota` is the OA plan's free
    messages a month (push, multicast, narrowcast, broadcast count once per recipient).

    `clock` (Unix seconds) drives every expiry: codes, tokens, ID-token iat/exp, retry keys.
    `users` defaults to `default_users()`. The state is `app.extensions["line_sandbox"]`.
    """
    if not channel_id or not channel_secret:
        raise ValueError("channel_id and channel_secret are required")
    state = SandboxState(channel_id=channel_id, channel_secret=channel_secret, issuer=issuer,
                         messaging_access_token=messaging_access_token,
                         # copies: logging in can change is_friend, never the caller's objects
                         users=[replace(u) for u in users] if users is not None else default_users(),
                         clock=clock)
    state.oa.channel_secret = messaging_channel_secret or secrets.token_hex(16)
    state.oa.quota_limit = message_quota
    app = Flask(__name__)
    app.extensions["line_sandbox"] = state

    @app.after_request
    def _request_id(resp: Response) -> Response:
        resp.headers.setdefault("x-line-request-id", str(uuid.uuid4()))
        resp.headers["Cache-Control"] = "no-store"
        return resp

    # ---------------------------------------------------------------------------------- login
    @app.get(endpoints.AUTHORIZE)
    def authorize_page() -> Any:
        params = request.args.to_dict()
        problem = _authorize_problem(state, params)
        if problem is not None:
            return problem
        return render_template_string(_LOGIN_PAGE, params=params, users=state.list_users(),
                                      bot_prompt=params.get("bot_prompt"), action=endpoints.AUTHORIZE)

    @app.post(endpoints.AUTHORIZE)
    def authorize_submit() -> Any:
        form = request.form.to_dict()
        sandbox = {k: form.pop(k) for k in list(form) if k.startswith("sandbox_")}
        problem = _authorize_problem(state, form)
        if problem is not None:
            return problem
        redirect_uri, st = form["redirect_uri"], form["state"]
        action = sandbox.get("sandbox_action", "")
        if action == "cancel":
            return _redirect(redirect_uri, [("error", "ACCESS_DENIED"),
                                            ("error_description", "The resource owner denied the request."),
                                            ("state", st)])
        if action not in ("allow", "autologin_fail"):
            return _page(400, "Bad sandbox form", "sandbox_action must be allow, cancel or autologin_fail.")
        user = state.user(sandbox.get("sandbox_user", ""))
        if user is None:
            return _page(400, "Bad sandbox form", "sandbox_user is not a sandbox user.")
        if action == "autologin_fail":
            # LINE's documented failure: a code arrives, but LINE never issued it to anyone.
            return _redirect(redirect_uri, [("code", secrets.token_urlsafe(15)), ("state", st)])
        extra: list[tuple[str, str]] = []
        if form.get("bot_prompt") in ("normal", "aggressive"):
            with state.lock:
                stored = state.users[user.user_id]
                if not stored.is_friend:  # the offer is shown only to non-friends
                    added = sandbox.get("sandbox_add_friend") == "1"
                    stored.is_friend = added
                    extra.append(("friendship_status_changed", "true" if added else "false"))
        code = secrets.token_urlsafe(15)
        with state.lock:
            state.codes[code] = _Grant(client_id=form["client_id"], redirect_uri=redirect_uri, user_id=user.user_id,
                                       scope=" ".join(sorted(set(form["scope"].split()), key=_scope_order)),
                                       nonce=form.get("nonce") or None, code_challenge=form.get("code_challenge") or None,
                                       created=state.clock())
        return _redirect(redirect_uri, [("code", code), ("state", st), *extra])

    # ---------------------------------------------------------------------------------- token
    @app.post(endpoints.TOKEN)
    def token() -> Any:
        early = _apply_fault(state, "token")
        if early is not None:
            return early
        f = request.form
        grant_type = f.get("grant_type", "")
        if grant_type not in ("authorization_code", "refresh_token"):
            return _oauth_error("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
        if f.get("client_id") != state.channel_id or not hmac.compare_digest(
                f.get("client_secret", "").encode(), state.channel_secret.encode()):
            return _oauth_error("invalid_client", "invalid client_id or client_secret")
        if grant_type == "refresh_token":
            return _refresh(state, f.get("refresh_token", ""))
        code = f.get("code", "")
        if not code or not f.get("redirect_uri"):
            return _oauth_error("invalid_request", "code and redirect_uri are required")
        now = state.clock()
        with state.lock:
            grant = state.codes.get(code)
            if grant is None or grant.client_id != f["client_id"]:
                return _oauth_error("invalid_grant", "invalid authorization code")
            if grant.used:
                # A replayed code: refuse, and revoke what the first use produced (RFC 6749 4.1.2).
                for tok in grant.access_tokens:
                    if tok in state.access_tokens:
                        state.access_tokens[tok].revoked = True
                return _oauth_error("invalid_grant", "invalid authorization code")
            grant.used = True  # one presentation, right or wrong, spends the code
            if now - grant.created > CODE_TTL:
                return _oauth_error("invalid_grant", "authorization code expired")
            if f["redirect_uri"] != grant.redirect_uri:
                return _oauth_error("invalid_grant", "redirect_uri does not match")
            if grant.code_challenge is not None:
                verifier = f.get("code_verifier", "")
                if not VERIFIER.match(verifier):
                    return _oauth_error("invalid_grant", "code_verifier is missing or malformed")
                if not hmac.compare_digest(_s256(verifier).encode(), grant.code_challenge.encode()):
                    return _oauth_error("invalid_grant", "invalid code_verifier")
            user = state.users.get(grant.user_id)
            access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(15)
            state.access_tokens[access] = _AccessToken(grant.user_id, grant.client_id, grant.scope, now, refresh)
            state.refresh_tokens[refresh] = _Refresh(grant.user_id, grant.client_id, grant.scope, now)
            grant.access_tokens.append(access)
        body: dict[str, Any] = {"access_token": access, "expires_in": ACCESS_TOKEN_TTL}
        if "openid" in grant.scope.split():
            body["id_token"] = _id_token(state, grant, user, now)
        body.update({"refresh_token": refresh, "scope": _public_scope(grant.scope), "token_type": "Bearer"})
        return jsonify(body)

    # ---------------------------------------------------------------------------------- verify
    @app.post(endpoints.VERIFY)
    def verify_id_token() -> Any:
        early = _apply_fault(state, "verify")
        if early is not None:
            return early
        f = request.form
        if not f.get("id_token") or not f.get("client_id"):
            return _oauth_error("invalid_request", "id_token and client_id are required")
        try:
            claims = jwt.decode(f["id_token"], key=state.channel_secret, algorithms=["HS256"],
                                options={"verify_exp": False, "verify_aud": False, "verify_iss": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.PyJWTError:
            return _oauth_error("invalid_request", "Invalid IdToken.")
        if claims.get("iss") != state.issuer:
            return _oauth_error("invalid_request", "Invalid IdToken Issuer.")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp < state.clock():
            return _oauth_error("invalid_request", "IdToken expired.")
        if claims.get("aud") != f["client_id"]:
            return _oauth_error("invalid_request", "Invalid IdToken Audience.")
        if f.get("nonce") and claims.get("nonce") != f["nonce"]:
            return _oauth_error("invalid_request", "Invalid IdToken Nonce.")
        if f.get("user_id") and claims.get("sub") != f["user_id"]:
            return _oauth_error("invalid_request", "Invalid IdToken Subject Identifier.")
        return jsonify(claims)

    @app.get(endpoints.VERIFY)
    def verify_access_token() -> Any:
        early = _apply_fault(state, "verify")
        if early is not None:
            return early
        tok, problem = _lookup_access_token(state, request.args.get("access_token", ""))
        if tok is None:
            return _oauth_error("invalid_request", problem)
        return jsonify({"scope": _public_scope(tok.scope), "client_id": tok.client_id,
                        "expires_in": int(tok.issued + ACCESS_TOKEN_TTL - state.clock())})

    # ---------------------------------------------------------------------------------- revoke
    @app.post(endpoints.REVOKE)
    def revoke() -> Any:
        early = _apply_fault(state, "revoke")
        if early is not None:
            return early
        f = request.form
        if not f.get("access_token"):
            return _oauth_error("invalid_request", "access_token is required")
        if f.get("client_id") != state.channel_id or not hmac.compare_digest(
                f.get("client_secret", "").encode(), state.channel_secret.encode()):
            return _oauth_error("invalid_client", "invalid client_id or client_secret")
        with state.lock:
            tok = state.access_tokens.get(f["access_token"])
            if tok is not None:
                tok.revoked = True
        return Response(status=200)

    # ---------------------------------------------------------------------------------- profile
    @app.get(endpoints.PROFILE)
    def profile() -> Any:
        early = _apply_fault(state, "profile")
        if early is not None:
            return early
        user, problem = _bearer_user(state)
        if user is None:
            return problem
        body = {"userId": user.user_id, "displayName": user.display_name}
        if user.picture_url:
            body["pictureUrl"] = user.picture_url
        return jsonify(body)

    @app.get(endpoints.FRIENDSHIP)
    def friendship() -> Any:
        early = _apply_fault(state, "friendship")
        if early is not None:
            return early
        user, problem = _bearer_user(state)
        if user is None:
            return problem
        return jsonify({"friendFlag": user.is_friend})

    # ---------------------------------------------------------------------------------- push
    @app.post(endpoints.PUSH)
    def push() -> Any:
        resp = app.make_response(_push())
        with state.lock:
            state.push_attempts.append({"retry_key": request.headers.get("X-Line-Retry-Key"),
                                        "status": resp.status_code})
        return resp

    def _push() -> Any:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not hmac.compare_digest(
                auth[7:].encode(), state.messaging_access_token.encode()):
            return jsonify({"message": AUTH_FAILED}), 401
        body = request.get_json(silent=True)
        errors = _push_errors(body)
        if errors:
            return jsonify({"message": f"The request body has {len(errors)} error(s)",
                            "details": [{"message": m, "property": p} for p, m in errors]}), 400
        key = request.headers.get("X-Line-Retry-Key")
        if key is not None and not _is_uuid(key):
            return jsonify({"message": "The retry key must be a hexadecimal UUID "
                                       "(e.g. 123e4567-e89b-12d3-a456-426614174000)"}), 400
        fault = state.take_fault("push")
        if fault is not None and not fault.mode.endswith("-accepted"):
            return _fault_response(state, fault)
        now = state.clock()
        request_id = str(uuid.uuid4())
        with state.lock:
            if key is not None:
                seen = state.retry_keys.get(key.lower())
                if seen is not None and now - seen[0] < RETRY_KEY_TTL:
                    resp = jsonify({"message": "The retry key is already accepted", "sentMessages": seen[2]})
                    resp.status_code = 409
                    resp.headers["x-line-accepted-request-id"] = seen[1]
                    return resp
            sent = [{"id": str(secrets.randbelow(10**18)), "quoteToken": secrets.token_urlsafe(16)}
                    for _ in body["messages"]]
            if not state.oa.charge(1):
                return jsonify({"message": "You have reached your monthly limit."}), 429
            if key is not None:
                state.retry_keys[key.lower()] = (now, request_id, sent)
            user = state.users.get(body["to"])
            state.pushes.append({"request_id": request_id, "to": body["to"], "messages": body["messages"],
                                 "retry_key": key, "received_at": now,
                                 # LINE accepts pushes to non-friends but nobody sees them
                                 "delivered": bool(user and user.is_friend)})
            state.oa.sent.append({"kind": "push", "request_id": request_id, "to": [body["to"]], "retry_key": key,
                                  "messages": body["messages"], "at": now,
                                  "delivered": [body["to"]] if user and user.is_friend else []})
        if fault is not None:
            if fault.mode == "hang-accepted":
                state.hang(fault.seconds)
            else:
                return jsonify({"message": "An internal server error occurred."}), 500
        resp = jsonify({"sentMessages": sent})
        resp.headers["x-line-request-id"] = request_id
        return resp

    # ---------------------------------------------------------------------------------- sandbox-only
    @app.get(endpoints.SANDBOX_PUSHES)
    def sandbox_pushes() -> Any:
        return jsonify({"pushes": state.list_pushes(), "attempts": state.list_push_attempts()})

    @app.delete(endpoints.SANDBOX_PUSHES)
    def sandbox_clear_pushes() -> Any:
        state.clear_pushes()
        return jsonify({"pushes": [], "attempts": []})

    @app.get(endpoints.SANDBOX_FAULTS)
    def sandbox_faults() -> Any:
        return jsonify({"faults": state.pending_faults()})

    @app.post(endpoints.SANDBOX_FAULTS)
    def sandbox_add_fault() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify({"message": 'send JSON like {"push": "500", "count": 1}'}), 400
        count, seconds = body.get("count", 1), body.get("seconds", 30)
        targets = {k: v for k, v in body.items() if k not in ("count", "seconds")}
        if not targets or isinstance(count, bool) or not isinstance(count, int) \
                or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return jsonify({"message": 'send JSON like {"push": "500", "count": 1, "seconds": 30}'}), 400
        try:
            for endpoint, mode in targets.items():
                state.add_fault(endpoint, str(mode), count, float(seconds))
        except ValueError as exc:
            return jsonify({"message": str(exc)}), 400
        return jsonify({"faults": state.pending_faults()})

    @app.delete(endpoints.SANDBOX_FAULTS)
    def sandbox_clear_faults() -> Any:
        state.clear_faults()
        return jsonify({"faults": {}})

    @app.get(endpoints.SANDBOX_USERS)
    def sandbox_users() -> Any:
        return jsonify({"users": [asdict(u) for u in state.list_users()]})

    @app.post(endpoints.SANDBOX_USERS)
    def sandbox_put_user() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify({"message": "send a JSON object with user_id, display_name, picture_url, is_friend"}), 400
        try:
            user = SandboxUser(user_id=str(body.get("user_id", "")), display_name=str(body.get("display_name", "")),
                               picture_url=body.get("picture_url") or None, is_friend=bool(body.get("is_friend", False)))
        except ValueError as exc:
            return jsonify({"message": str(exc)}), 400
        state.put_user(user)
        return jsonify(asdict(user))

    from lineapi.sandbox_oa import add_messaging_routes
    add_messaging_routes(app, state)
    return app


# -------------------------------------------------------------------------------------------------
def _authorize_problem(state: SandboxState, params: dict[str, str]) -> Any:
    """None if the authorize request is acceptable; else LINE's answer: a 400 page for a bad
    client or redirect_uri (never redirected), a redirect with `error` for anything else."""
    if params.get("client_id") != state.channel_id:
        return _page(400, "400 Bad Request", "Invalid client_id: the LINE Login channel does not exist.")
    redirect_uri = params.get("redirect_uri", "")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return _page(400, "400 Bad Request", "Invalid redirect_uri: it must be an absolute http(s) URL "
                                             "matching a callback URL registered for the channel.")
    st = params.get("state", "")

    def fail(error: str, description: str) -> Response:
        pairs = [("error", error), ("error_description", description)]
        if st:
            pairs.append(("state", st))
        return _redirect(redirect_uri, pairs)

    if params.get("response_type") != "code":
        return fail("UNSUPPORTED_RESPONSE_TYPE", "response_type must be code")
    scopes = set(params.get("scope", "").split())
    if not scopes or not scopes <= KNOWN_SCOPES or "email" in scopes and "openid" not in scopes:
        return fail("INVALID_SCOPE", "scope must be made of openid, profile (and email with openid)")
    if not {"openid", "profile"} <= scopes:
        return fail("INVALID_SCOPE", "the sandbox channel needs scope openid and profile")
    if not st:
        return fail("INVALID_REQUEST", "state is required")
    challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
    if challenge and method != "S256":
        return fail("INVALID_REQUEST", "code_challenge_method must be S256")
    if method and not challenge:
        return fail("INVALID_REQUEST", "code_challenge is required with code_challenge_method")
    if challenge and not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge):
        return fail("INVALID_REQUEST", "code_challenge must be a base64url SHA-256 (43 characters)")
    if params.get("bot_prompt") not in (None, "normal", "aggressive"):
        return fail("INVALID_REQUEST", "bot_prompt must be normal or aggressive")
    if params.get("prompt") == "none":
        # The sandbox keeps no LINE session, so a silent login can never succeed.
        return fail("LOGIN_REQUIRED", "the user is not logged in to LINE")
    if params.get("prompt") not in (None, "consent", "login"):
        return fail("INVALID_REQUEST", "prompt must be consent, none or login")
    return None


def _redirect(redirect_uri: str, pairs: list[tuple[str, str]]) -> Response:
    """302 to redirect_uri with `pairs` appended to whatever query it already has."""
    parts = urlsplit(redirect_uri)
    query = parts.query + ("&" if parts.query else "") + urlencode(pairs)
    resp = flask.redirect(urlunsplit(parts._replace(query=query)), code=302)
    return resp


def _page(status: int, title: str, text: str) -> Response:
    html = render_template_string("<!doctype html><title>{{ t }}</title><h1>{{ t }}</h1><p>{{ x }}</p>", t=title, x=text)
    return Response(html, status=status, mimetype="text/html")


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    resp = jsonify({"error": error, "error_description": description})
    resp.status_code = status
    return resp


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _scope_order(s: str) -> int:
    return ["profile", "openid", "email"].index(s) if s in ("profile", "openid", "email") else 9


def _public_scope(scope: str) -> str:
    # LINE never shows email in a token's scope.
    return " ".join(s for s in scope.split() if s != "email")


def _id_token(state: SandboxState, grant: _Grant, user: SandboxUser | None, now: float) -> str:
    iat = int(now)
    claims: dict[str, Any] = {"iss": state.issuer, "sub": grant.user_id, "aud": grant.client_id,
                              "exp": iat + ID_TOKEN_TTL, "iat": iat}
    if grant.nonce is not None:
        claims["nonce"] = grant.nonce
    claims["amr"] = ["pwd"]
    if "profile" in grant.scope.split() and user is not None:
        claims["name"] = user.display_name
        if user.picture_url:
            claims["picture"] = user.picture_url
    # PyJWT's header is exactly LINE's web-login one: {"alg": "HS256", "typ": "JWT"}, no kid.
    return jwt.encode(claims, state.channel_secret, algorithm="HS256")


def _refresh(state: SandboxState, refresh_token: str) -> Response:
    now = state.clock()
    with state.lock:
        ref = state.refresh_tokens.get(refresh_token)
        if ref is None or now - ref.first_issued > REFRESH_TTL:
            return _oauth_error("invalid_grant", "invalid refresh token")
        access = secrets.token_urlsafe(32)
        state.access_tokens[access] = _AccessToken(ref.user_id, ref.client_id, ref.scope, now, refresh_token)
    return jsonify({"token_type": "Bearer", "scope": _public_scope(ref.scope), "access_token": access,
                    "expires_in": ACCESS_TOKEN_TTL, "refresh_token": refresh_token})


def _lookup_access_token(state: SandboxState, token: str) -> tuple[_AccessToken | None, str]:
    now = state.clock()
    with state.lock:
        tok = state.access_tokens.get(token)
        if tok is None or tok.revoked:
            return None, "invalid access token"
        if now - tok.issued >= ACCESS_TOKEN_TTL:
            return None, "access token expired"
        return tok, ""


def _bearer_user(state: SandboxState) -> tuple[SandboxUser | None, Any]:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return None, (jsonify({"message": "Authorization header required"}), 401)
    tok, problem = _lookup_access_token(state, auth[7:])
    if tok is None:
        return None, (jsonify({"message": "invalid token" if "invalid" in problem else "The access token expired"}), 401)
    if "profile" not in tok.scope.split():
        return None, (jsonify({"message": "Not allowed to use the API: the access token lacks the profile scope"}), 403)
    user = state.user(tok.user_id)
    if user is None:
        return None, (jsonify({"message": "invalid token"}), 401)
    return user, None


def _apply_fault(state: SandboxState, endpoint: str) -> Response | None:
    fault = state.take_fault(endpoint)
    return None if fault is None else _fault_response(state, fault)


def _fault_response(state: SandboxState, fault: _Fault) -> Response:
    if fault.mode == "429":
        resp = jsonify({"message": "The API rate limit has been exceeded. Try again later."})
        resp.status_code = 429
        return resp
    if fault.mode.startswith("hang"):
        state.hang(fault.seconds)
    resp = jsonify({"message": "An internal server error occurred."})
    resp.status_code = 500
    return resp


def _is_uuid(value: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", value) is not None


def _push_errors(body: Any) -> list[tuple[str, str]]:
    """LINE-style validation of a push body: (property, message) pairs."""
    if not isinstance(body, dict):
        return [("", "The request body must be a JSON object")]
    errors: list[tuple[str, str]] = []
    to = body.get("to")
    if not isinstance(to, str) or not to:
        errors.append(("to", "must be specified"))
    elif not PUSH_TARGET.match(to):
        errors.append(("to", "The property, 'to', in the request body is invalid"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        errors.append(("messages", "must be specified"))
        return errors
    if len(messages) > 5:
        errors.append(("messages", "Size must be between 1 and 5"))
    for i, msg in enumerate(messages[:5]):
        if not isinstance(msg, dict) or msg.get("type") not in MESSAGE_TYPES:
            errors.append((f"messages[{i}].type", "Invalid message type"))
            continue
        if msg["type"] == "text":
            text = msg.get("text")
            if not isinstance(text, str) or not text:
                errors.append((f"messages[{i}].text", "must be specified"))
            elif len(text) > 5000:
                errors.append((f"messages[{i}].text", "Length must be between 0 and 5000"))
    return errors


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>LINE Login (sandbox)</title>
<style>body{font-family:sans-serif;max-width:26em;margin:2em auto;padding:0 1em}
.brand{background:#06c755;color:#fff;padding:.6em 1em;border-radius:.4em}
button{font-size:1.1em;padding:.5em 1.2em;margin:.3em .3em 0 0}
.offer{border:1px solid #06c755;padding:.6em;margin:1em 0;border-radius:.4em}
small{color:#555}</style></head>
<body>
<h1 class="brand">LINE <small style="color:#fff">(sandbox, not the real LINE)</small></h1>
<form method="post" action="{{ action }}">
{% for name, value in params.items() %}<input type="hidden" name="{{ name }}" value="{{ value }}">
{% endfor %}
<p><label for="sandbox_user">Log in as</label><br>
<select name="sandbox_user" id="sandbox_user">
{% for u in users %}<option value="{{ u.user_id }}" data-friend="{{ 'yes' if u.is_friend else 'no' }}">{{ u.display_name }}{{ ' (friend of the Official Account)' if u.is_friend else '' }}</option>
{% endfor %}</select></p>
<p>This app will receive your user ID, display name and profile picture (scope: {{ params.get('scope', '') }}).</p>
{% if bot_prompt in ('normal', 'aggressive') and users|rejectattr('is_friend')|list %}
<div class="offer" id="add-friend-offer">
{% if bot_prompt == 'aggressive' %}<p><strong>Add friend</strong> <small>(bot_prompt=aggressive: LINE shows this on a separate add-friend screen after the consent screen)</small></p>
{% else %}<p><strong>Add friend</strong> <small>(bot_prompt=normal: an option on LINE's consent screen)</small></p>{% endif %}
<label><input type="checkbox" name="sandbox_add_friend" value="1"> Add the LINE Official Account as a friend</label>
<p><small>Shown only to users who are not friends yet; for a user who already is, the sandbox ignores it.</small></p>
</div>
{% endif %}
<button type="submit" name="sandbox_action" value="allow">Log in</button>
<button type="submit" name="sandbox_action" value="cancel">Cancel</button>
<p><small>Testing: <button type="submit" name="sandbox_action" value="autologin_fail">Simulate auto-login failure</button></small></p>
</form>
</body></html>
"""
