"""The visitor's path: splash, Login with LINE, callback, welcome."""
from __future__ import annotations

import logging

from flask import Blueprint, abort, redirect, render_template, request, session, url_for

from ledger.records import Login, latest_lease, log_event, record_login
from lineapi.client import LineError, callback_error, new_pkce, new_token
from portal.attempts import Attempt
from portal.context import config, services

bp = Blueprint("login", __name__)
log = logging.getLogger(__name__)


def redirect_uri() -> str:
    """The callback URL registered with the LINE Login channel."""
    return f"{config().portal.base_url}/callback"


def client_mac(ip: str) -> str | None:
    """The device behind `ip`: the neighbour table first, the DHCP lease record second."""
    mac = services().gate.mac_for_ip(ip)
    if mac:
        return mac
    lease = latest_lease(services().ledger, ip)
    return lease["mac"] if lease else None


@bp.get("/")
def splash():
    """The first page a visitor sees."""
    cfg = config()
    return render_template("splash.html", office=cfg.box.office, terms_version=cfg.portal.terms_version,
                           hours=max(1, cfg.portal.session_seconds // 3600))


@bp.get("/login")
def start_login():
    """Start a LINE login: state, nonce and PKCE, kept on the server and bound to this browser."""
    cfg = config()
    verifier, challenge = new_pkce()
    attempt = Attempt(state=new_token(), nonce=new_token(), code_verifier=verifier,
                      client_ip=request.remote_addr or "", lang="th", created=services().clock())
    services().attempts.start(attempt)
    session["state"] = attempt.state
    url = services().line.authorize_url(redirect_uri=redirect_uri(), state=attempt.state, nonce=attempt.nonce,
                                        code_challenge=challenge, bot_prompt=cfg.portal.bot_prompt,
                                        ui_locales="th en")
    return redirect(url, code=302)


def failure(title: str, message: str, status: int = 400, retry: bool = True):
    """A friendly error page with a way to try again; never a stack trace."""
    return render_template("error.html", title=title, message=message, retry=retry), status


@bp.get("/callback")
def callback():
    """LINE sends the visitor back here with `code` and `state` (or an error)."""
    cfg, svc = config(), services()
    state = request.args.get("state", "")
    err = callback_error(request.args)
    if err is not None:
        log_event(svc.ledger, "login_refused", request.remote_addr, reason=err.kind)
        if err.kind == "denied":
            return failure("Login cancelled", "You cancelled the LINE login. You can try again at any time.")
        return failure("LINE login failed", "LINE could not complete the login. Please try again.")
    if not state or state != session.get("state"):
        log_event(svc.ledger, "login_refused", request.remote_addr, reason="state_mismatch")
        return failure("Login expired", "This login link is no longer valid. Please start again.")
    attempt = svc.attempts.take(state)
    session.pop("state", None)
    if attempt is None:
        log_event(svc.ledger, "login_refused", request.remote_addr, reason="unknown_or_used_state")
        return failure("Login expired", "This login link is no longer valid. Please start again.")
    code = request.args.get("code", "")
    if not code:
        return failure("LINE login failed", "LINE did not send a login code. Please try again.")
    try:
        tokens = svc.line.exchange_code(code, redirect_uri(), attempt.code_verifier)
        claims = svc.line.verify_id_token(tokens.id_token, attempt.nonce)
        friend = _friendship(tokens.access_token)
    except LineError as exc:
        log_event(svc.ledger, "login_refused", request.remote_addr, reason=exc.kind)
        return failure("LINE login failed", "We could not confirm your LINE login. Please try again.", status=502)

    ip = request.remote_addr or ""
    mac = client_mac(ip)
    if mac is None:
        log_event(svc.ledger, "login_refused", ip, reason="no_mac_for_ip", line_user_id=claims.sub)
        return failure("Device not found", "We could not find your device on this WiFi. Reconnect and try again.",
                       status=409)
    seconds = cfg.portal.session_seconds
    svc.gate.authorise(mac, ip, seconds)
    changed = request.args.get("friendship_status_changed")
    record_login(svc.ledger, Login(
        method="line", line_user_id=claims.sub, display_name=claims.name or "", friend=friend,
        friendship_changed=None if changed is None else changed == "true",
        consent_version=cfg.portal.terms_version, mac=mac, ip=ip,
        expires_ms=int((svc.clock() + seconds) * 1000)))
    session["welcome"] = {"name": claims.name or "", "seconds": seconds}
    return redirect(url_for("login.welcome"), code=303)


def _friendship(access_token: str) -> bool | None:
    """Whether the visitor has the OA as a friend; unknown (None) if LINE does not say.
    Never a reason to refuse WiFi."""
    try:
        return services().line.friendship(access_token)
    except LineError as exc:
        log.warning("friendship status unavailable: %s", exc)
        return None


@bp.get("/welcome")
def welcome():
    """Shown once the device is let through."""
    info = session.get("welcome")
    if not info:
        abort(404)
    return render_template("welcome.html", name=info["name"], minutes=info["seconds"] // 60,
                           oa_basic_id=config().line.oa_basic_id)
