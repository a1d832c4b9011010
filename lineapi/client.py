"""The LINE Login v2.1 client the portal uses: authorize URL, code exchange, ID-token check,
profile and friendship.

Web login is the OAuth 2.0 code flow with PKCE (S256). The ID token of web login is an HS256
JWT signed with the Login channel secret and has no `kid`, so it is verified locally with PyJWT
rather than through an OIDC library that insists on the discovery document's ES256 keys.
Every HTTP call uses `LineConfig.http_timeout_seconds`; failures become `LineError` with a
`kind` the portal can branch on and a message that never contains a secret or a token.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, urlencode

import jwt
import requests

from lineapi import endpoints
from base.config import LineConfig

SCOPE = "openid profile"
# LINE's clock and ours may differ by a little; more would let stale tokens through.
ID_TOKEN_LEEWAY_SECONDS = 30
BOT_PROMPTS = ("aggressive", "normal", "none")
PROMPTS = ("consent", "none", "login")
ERROR_KINDS = ("denied", "invalid", "timeout", "server", "token")
_MAX_DETAIL = 200


class LineError(Exception):
    """A LINE call or callback failed.

    `kind` is one of "denied" (the user refused), "invalid" (LINE rejected our request: 4xx,
    or a bad callback), "timeout", "server" (5xx, unreachable, or an answer we cannot read)
    and "token" (the ID token failed verification). `code` is LINE's error code when it gave
    one (e.g. "ACCESS_DENIED", "invalid_grant"), `status` the HTTP status when there was one.
    str(err) is safe to log and to show to an operator: it holds no secret or token.
    """

    def __init__(self, kind: str, message: str, *, code: str | None = None, status: int | None = None) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown LineError kind {kind!r}; expected one of {ERROR_KINDS}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status

    def __repr__(self) -> str:
        return f"LineError(kind={self.kind!r}, message={self.message!r}, code={self.code!r}, status={self.status!r})"


def _clean(text: Any) -> str:
    """Text from LINE (or from a callback URL anyone can forge), made safe to log: printable
    ASCII-ish only, bounded length."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return s[:_MAX_DETAIL]


def new_pkce() -> tuple[str, str]:
    """A fresh PKCE pair: (code_verifier, code_challenge) with the S256 method.

    The verifier is 64 characters of the RFC 7636 unreserved set (LINE wants 43 to 128).
    """
    verifier = secrets.token_urlsafe(48)  # 48 bytes -> 64 url-safe characters
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def new_token() -> str:
    """A random value for `state` or `nonce`: 40 hex digits (160 bits). LINE requires `state`
    to be alphanumeric; hex is, and survives URLs unencoded."""
    return secrets.token_hex(20)


@dataclass(frozen=True)
class TokenSet:
    """The token endpoint's answer. `expires_in` is seconds (LINE: 30 days)."""

    access_token: str
    id_token: str
    expires_in: int
    refresh_token: str
    scope: str


@dataclass(frozen=True)
class IdClaims:
    """The verified claims of an ID token. `sub` is the LINE userId ("U" + 32 hex digits);
    `name` is "" and `picture` None when LINE did not send them; `amr` may be empty."""

    sub: str
    name: str
    picture: str | None
    nonce: str
    iat: int
    exp: int
    amr: list[str]


@dataclass(frozen=True)
class Profile:
    """GET /v2/profile: `picture_url` is None when the user has no picture."""

    user_id: str
    display_name: str
    picture_url: str | None


_AUTH_ERRORS = {
    "access_denied": ("denied", "The LINE login was cancelled or refused"),
    "server_error": ("server", "LINE had a temporary problem during login"),
    "temporarily_unavailable": ("server", "LINE is temporarily unavailable"),
    "invalid_request": ("invalid", "LINE rejected the login request"),
    "invalid_scope": ("invalid", "LINE rejected the requested permissions"),
    "unauthorized_client": ("invalid", "This LINE channel may not use this login flow"),
    "unsupported_response_type": ("invalid", "LINE rejected the login request"),
    "login_required": ("invalid", "LINE needs the user to log in"),
    "interaction_required": ("invalid", "LINE needs the user to interact"),
    "consent_required": ("invalid", "LINE needs the user's consent"),
}


def callback_error(args: Mapping[str, str]) -> LineError | None:
    """Map the query of an authorize callback to a LineError, or None when it has no `error`.

    LINE sends `error` (ACCESS_DENIED, INVALID_REQUEST, INVALID_SCOPE, SERVER_ERROR,
    LOGIN_REQUIRED, INTERACTION_REQUIRED, ...; matched case-insensitively), optionally
    `error_description` and `state`. Access denied gives kind "denied"; server errors "server";
    anything else "invalid". The description is included, cleaned, since anyone can forge it.
    """
    error = args.get("error")
    if error is None:
        return None
    code = _clean(error)
    kind, text = _AUTH_ERRORS.get(code.lower(), ("invalid", "LINE reported a login error"))
    description = args.get("error_description")
    message = f"{text} ({code})"
    if description:
        message += f": {_clean(description)}"
    return LineError(kind, message, code=code)


class LineLogin:
    """LINE Login v2.1 for one Login channel (`cfg`). Thread-safe as long as the given
    `requests.Session` is used only for these calls."""

    def __init__(self, cfg: LineConfig, http: requests.Session | None = None) -> None:
        self.cfg = cfg
        self.http = http if http is not None else requests.Session()

    # -- step 1: send the user to LINE ------------------------------------------------------
    def authorize_url(self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str,
                      bot_prompt: str, ui_locales: str | None = None,
                      disable_auto_login: bool = False, prompt: str | None = None) -> str:
        """The URL of LINE's login page for this attempt.

        `bot_prompt` is "aggressive", "normal" or "none" (the parameter is then omitted);
        `prompt` is None, "consent", "none" or "login"; `ui_locales` e.g. "th en".
        Scope is "openid profile", PKCE method S256. Raises ValueError on a bad argument.
        """
        if bot_prompt not in BOT_PROMPTS:
            raise ValueError(f"bot_prompt must be one of {BOT_PROMPTS}, not {bot_prompt!r}")
        if prompt is not None and prompt not in PROMPTS:
            raise ValueError(f"prompt must be None or one of {PROMPTS}, not {prompt!r}")
        for name, value in (("redirect_uri", redirect_uri), ("state", state), ("nonce", nonce),
                            ("code_challenge", code_challenge)):
            if not value:
                raise ValueError(f"{name} must not be empty")
        if not state.isalnum() or not state.isascii():
            raise ValueError("state must be ASCII letters and digits only (LINE requires it)")
        params: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", self.cfg.channel_id),
            ("redirect_uri", redirect_uri),
            ("state", state),
            ("scope", SCOPE),
            ("nonce", nonce),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ]
        if bot_prompt != "none":
            params.append(("bot_prompt", bot_prompt))
        if ui_locales:
            params.append(("ui_locales", ui_locales))
        if disable_auto_login:
            params.append(("disable_auto_login", "true"))
        if prompt:
            params.append(("prompt", prompt))
        # quote (not quote_plus): spaces in scope/ui_locales become %20 as in LINE's examples.
        return endpoints.join(self.cfg.login_base_url, endpoints.AUTHORIZE) + "?" + urlencode(params, quote_via=quote)

    # -- HTTP plumbing ----------------------------------------------------------------------
    def _call(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        """One call to LINE's API host; returns the decoded JSON body (or None when empty)."""
        url = endpoints.join(self.cfg.api_base_url, path)
        try:
            resp = self.http.request(method, url, timeout=self.cfg.http_timeout_seconds, **kwargs)
        except requests.Timeout:
            raise LineError("timeout", f"LINE did not answer the {what} request within "
                                       f"{self.cfg.http_timeout_seconds:g} s") from None
        except requests.RequestException as exc:
            raise LineError("server", f"could not reach LINE for the {what} request ({type(exc).__name__})") from None
        status = resp.status_code
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = None
        if status >= 500:
            raise LineError("server", f"LINE answered the {what} request with HTTP {status}", status=status)
        if status >= 400:
            code, detail = None, ""
            if isinstance(body, dict):
                code = body.get("error")
                detail = body.get("error_description") or body.get("message") or ""
            message = f"LINE rejected the {what} request (HTTP {status}"
            message += f", {_clean(code)})" if code else ")"
            if detail:
                message += f": {_clean(detail)}"
            raise LineError("invalid", message, code=_clean(code) if code else None, status=status)
        if status != 200 or (resp.content and body is None):
            raise LineError("server", f"LINE answered the {what} request with an unexpected HTTP {status} body",
                            status=status)
        return body

    # -- step 2: the code ---------------------------------------------------------------------
    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> TokenSet:
        """Trade the callback's `code` for tokens (form POST, client_secret_post, PKCE)."""
        if not code:
            raise LineError("invalid", "the callback carried no authorization code")
        body = self._call("token", "POST", endpoints.TOKEN, data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.cfg.channel_id,
            "client_secret": self.cfg.channel_secret,
            "code_verifier": code_verifier,
        })
        return self._token_set(body, require_id_token=True)

    def refresh(self, refresh_token: str) -> TokenSet:
        """A new access token from a refresh token; `id_token` is "" (LINE sends none)."""
        body = self._call("token refresh", "POST", endpoints.TOKEN, data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.cfg.channel_id,
            "client_secret": self.cfg.channel_secret,
        })
        return self._token_set(body, require_id_token=False)

    @staticmethod
    def _token_set(body: Any, *, require_id_token: bool) -> TokenSet:
        if not isinstance(body, dict):
            raise LineError("server", "LINE's token answer is not a JSON object")
        access_token = body.get("access_token")
        id_token = body.get("id_token", "")
        expires_in = body.get("expires_in")
        if not isinstance(access_token, str) or not access_token:
            raise LineError("server", "LINE's token answer has no access_token")
        if require_id_token and (not isinstance(id_token, str) or not id_token):
            raise LineError("token", "LINE's token answer has no id_token (was the openid scope granted?)")
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
            raise LineError("server", "LINE's token answer has no numeric expires_in")
        return TokenSet(access_token=access_token, id_token=id_token if isinstance(id_token, str) else "",
                        expires_in=int(expires_in), refresh_token=str(body.get("refresh_token", "")),
                        scope=str(body.get("scope", "")))

    # -- step 3: who is it --------------------------------------------------------------------
    def verify_id_token(self, id_token: str, nonce: str) -> IdClaims:
        """Verify a web-login ID token locally and return its claims.

        Checks the HS256 signature with the channel secret, `aud` = channel ID, `iss` =
        `cfg.issuer`, `exp` and `iat` (leeway ID_TOKEN_LEEWAY_SECONDS), and `nonce` (constant
        time). Any failure raises LineError(kind="token").
        """
        if not nonce:
            raise LineError("token", "no nonce to compare the ID token with")
        try:
            claims = jwt.decode(
                id_token, key=self.cfg.channel_secret, algorithms=["HS256"],
                audience=self.cfg.channel_id, issuer=self.cfg.issuer, leeway=ID_TOKEN_LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise LineError("token", "the ID token has expired") from None
        except jwt.InvalidAudienceError:
            raise LineError("token", "the ID token was issued for another channel (aud)") from None
        except jwt.InvalidIssuerError:
            raise LineError("token", "the ID token has the wrong issuer (iss)") from None
        except jwt.ImmatureSignatureError:
            raise LineError("token", "the ID token is issued in the future (iat); check the clock") from None
        except jwt.InvalidSignatureError:
            raise LineError("token", "the ID token's signature does not match the channel secret") from None
        except jwt.MissingRequiredClaimError as exc:
            raise LineError("token", f"the ID token lacks the {_clean(exc.claim)!r} claim") from None
        except jwt.PyJWTError as exc:
            raise LineError("token", f"the ID token is invalid ({type(exc).__name__})") from None
        got_nonce = claims.get("nonce")
        if not isinstance(got_nonce, str) or not hmac.compare_digest(got_nonce.encode(), nonce.encode()):
            raise LineError("token", "the ID token's nonce does not match this login attempt")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise LineError("token", "the ID token's subject is not a user ID")
        amr = claims.get("amr") or []
        if not isinstance(amr, list) or not all(isinstance(a, str) for a in amr):
            raise LineError("token", "the ID token's amr claim is not a list of strings")
        name = claims.get("name") or ""
        picture = claims.get("picture") or None
        return IdClaims(sub=sub, name=str(name), picture=str(picture) if picture else None, nonce=got_nonce,
                        iat=int(claims["iat"]), exp=int(claims["exp"]), amr=list(amr))

    def profile(self, access_token: str) -> Profile:
        """GET /v2/profile with the user's access token."""
        body = self._call("profile", "GET", endpoints.PROFILE, headers=_bearer(access_token))
        if not isinstance(body, dict) or not isinstance(body.get("userId"), str):
            raise LineError("server", "LINE's profile answer has no userId")
        picture = body.get("pictureUrl")
        return Profile(user_id=body["userId"], display_name=str(body.get("displayName", "")),
                       picture_url=picture if isinstance(picture, str) and picture else None)

    def friendship(self, access_token: str) -> bool:
        """True when the user has the linked Official Account as a friend and has not blocked it."""
        body = self._call("friendship", "GET", endpoints.FRIENDSHIP, headers=_bearer(access_token))
        flag = body.get("friendFlag") if isinstance(body, dict) else None
        if not isinstance(flag, bool):
            raise LineError("server", "LINE's friendship answer has no boolean friendFlag")
        return flag

    def revoke(self, access_token: str) -> None:
        """Invalidate the user's access token (POST /oauth2/v2.1/revoke)."""
        self._call("revoke", "POST", endpoints.REVOKE, data={
            "access_token": access_token,
            "client_id": self.cfg.channel_id,
            "client_secret": self.cfg.channel_secret,
        })


def _bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}
