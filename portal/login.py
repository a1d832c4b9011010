"""The visitor's path: splash with the terms and PDPA notice, Login with LINE, callback, welcome.

Flow (what a client must send):
  GET /                      splash: notice + a GET form to /login (the LINE button submits it)
  GET /login?terms=VERSION[&oa_messages=1][&next=/path][&auto=0]
                             VERSION must be the terms_version shown; oa_messages is the separate,
                             unticked consent to messages from the Official Account; auto=0 asks
                             LINE for disable_auto_login=true (the retry after an auto-login failure)
  GET /callback?code&state   from LINE; 303 to /welcome (or to a same-portal `next`)
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, session, url_for
from flask_babel import force_locale, gettext as _

from ledger.db import LedgerError
from netcfg.gate import GateError
from ledger.records import Login, log_event
from lineapi.client import LineError, callback_error, new_pkce, new_token
from portal.attempts import Attempt
from portal.clients import Browser, authorisation_for, client_ip, client_mac, detect_browser
from portal.context import config, services
from portal.i18n import current_language, ui_locales
from portal.notify import push_welcome_async
from portal.urls import safe_next

bp = Blueprint("login", __name__)
log = logging.getLogger(__name__)


def redirect_uri() -> str:
    """The callback URL registered with the LINE Login channel."""
    return f"{config().portal.base_url}/callback"


def no_store(resp: Response) -> Response:
    """Pages about one device's state must never come from a cache."""
    resp.headers["Cache-Control"] = "no-store"
    return resp


def failure(reason: str, title: str, message: str, status: int = 400, retry_url: str = "/",
            help_autologin: bool = False) -> tuple[str, int]:
    """A friendly error page with a way to try again; never a stack trace. `reason` is a
    stable word for scripts (data-reason on the heading)."""
    return render_template("error.html", reason=reason, title=title, message=message, retry_url=retry_url,
                           help_autologin=help_autologin, lang_base="/"), status


def login_url(terms: str, oa: bool, auto: bool = True, next_path: str = "") -> str:
    """Our /login URL for a fresh attempt with these choices."""
    params = {"terms": terms}
    if oa:
        params["oa_messages"] = "1"
    if not auto:
        params["auto"] = "0"
    if next_path:
        params["next"] = next_path
    return url_for("login.start_login", **params)


@bp.get("/")
def splash():
    """The first page: who we are, the terms and PDPA notice, the LINE button."""
    online = authorisation_for(client_ip()) is not None
    browser = detect_browser(request.user_agent.string)
    # Every phone that joins asks for this page, often several times; its text depends only on
    # these four (the language, the query, the browser kind and whether the device is online), so
    # the rendered page is kept (bounded LRU, see create_app): a render is ~0.6 ms of translation
    # lookups on a 2-core box, a cached answer none.
    body = current_app.extensions["skillspot.splash"](current_language(), request.full_path, browser, online)
    return no_store(Response(body))


def render_splash(lang: str, full_path: str, browser: Browser, online: bool) -> str:
    """The splash page for the request being served (the arguments are its cache key: the
    language, the path and query, and the browser kind, all of which the page reads)."""
    cfg = config()
    return render_template(
        "splash.html", office=cfg.box.office, terms_version=cfg.portal.terms_version,
        hours=max(1, cfg.portal.session_seconds // 3600), browser=browser,
        online=online, portal_url=cfg.portal.base_url + "/",
        next_path=safe_next(request.args.get("next")) or "")


@bp.get("/terms")
def terms():
    """The full terms of use and PDPA notice of the version in force."""
    return render_template("terms.html", terms_version=config().portal.terms_version)


@bp.get("/venue")
def venue():
    """About this WiFi (RFC 8908 venue-info-url when none is configured)."""
    cfg = config()
    return render_template("venue.html", office=cfg.box.office, coordinator=cfg.box.coordinator,
                           oa_basic_id=cfg.line.oa_basic_id)


@bp.get("/login")
def start_login():
    """Start a LINE login: state, nonce and PKCE, kept on the server and bound to this device."""
    cfg, svc = config(), services()
    lang = current_language()
    if request.args.get("terms") != cfg.portal.terms_version:
        return failure("terms", _("Please read the terms first"),
                       _("Read the terms of use and the personal data notice, then tap the LINE button."))
    raw_next = request.args.get("next")
    next_path = safe_next(raw_next) if raw_next else ""
    if next_path is None:
        log_event(svc.ledger, "login_refused", client_ip(), reason="open_redirect", next=raw_next[:200])
        return failure("redirect", _("This link is not part of the WiFi login"),
                       _("The return address in this link points outside the WiFi portal, so we will not follow it."))
    oa = request.args.get("oa_messages") == "1"
    verifier, challenge = new_pkce()
    attempt = Attempt(state=new_token(), nonce=new_token(), code_verifier=verifier, client_ip=client_ip(),
                      lang=lang, created=svc.clock(), terms_version=cfg.portal.terms_version, oa_consent=oa,
                      next_path=next_path)
    svc.attempts.start(attempt)
    session["state"] = attempt.state
    url = svc.line.authorize_url(redirect_uri=redirect_uri(), state=attempt.state, nonce=attempt.nonce,
                                 code_challenge=challenge, bot_prompt=cfg.portal.bot_prompt,
                                 ui_locales=ui_locales(lang), disable_auto_login=request.args.get("auto") == "0")
    return no_store(redirect(url, code=302))


def _refuse(reason: str, **detail) -> None:
    log_event(services().ledger, "login_refused", client_ip(), reason=reason, **detail)


@bp.get("/callback")
def callback():
    """LINE sends the visitor back here with `code` and `state` (or an error)."""
    cfg, svc = config(), services()
    ip = client_ip()
    state = request.args.get("state", "")
    code = request.args.get("code", "")
    terms_version = cfg.portal.terms_version
    err = callback_error(request.args)
    session_state = session.get("state")
    if err is not None:
        if state:
            # Spend the attempt, so a later forged "success" with this state finds nothing; but
            # only from its own device or browser: another device cannot cancel it.
            svc.attempts.claim(state, ip, same_browser=session_state == state)
        session.pop("state", None)
        _refuse(err.kind, code=err.code)
        if err.kind == "denied":
            return failure("cancelled", _("Login cancelled"),
                           _("You cancelled the LINE login. You can try again at any time."))
        if err.kind == "server":
            return failure("line_error", _("LINE is having a problem"),
                           _("LINE could not complete the login just now. Please wait a moment and try again."), 502)
        return failure("line_error", _("LINE login failed"), _("LINE could not complete the login. Please try again."))
    if not state:
        _refuse("no_state")
        return failure("invalid", _("LINE login failed"), _("This page was opened without a login in progress."))
    # The browser that started the attempt, or (for a login finished in another browser of the
    # same phone, e.g. after leaving the captive sheet) the same device. Anyone else is refused
    # without spending it: the attempt stays usable by its own device.
    attempt, why = svc.attempts.claim(state, ip, same_browser=session_state == state)
    session.pop("state", None)
    if why == "other_device":
        _refuse("other_device")
        return failure("expired", _("Login expired"), _("This login link is no longer valid. Please start again."),
                       retry_url=login_url(terms_version, False, auto=False))
    if attempt is None:
        _refuse("state_mismatch" if session_state and session_state != state else "unknown_or_used_state")
        # LINE's documented auto-login failure looks exactly like this (a code with a state we
        # cannot match): offer the login again without auto login.
        return failure("expired", _("Login expired"), _("This login link is no longer valid. Please start again."),
                       retry_url=login_url(terms_version, False, auto=False), help_autologin=bool(code))
    retry = login_url(terms_version, attempt.oa_consent, next_path=attempt.next_path)
    if not code:
        _refuse("no_code")
        return failure("line_error", _("LINE login failed"), _("LINE did not send a login code. Please try again."),
                       retry_url=retry)
    try:
        tokens = svc.line.exchange_code(code, redirect_uri(), attempt.code_verifier)
        claims = svc.line.verify_id_token(tokens.id_token, attempt.nonce)
    except LineError as exc:
        _refuse(exc.kind, code=exc.code, error=str(exc))
        if exc.code == "invalid_grant":
            return failure("autologin", _("Automatic login did not work"),
                           _("LINE's automatic login did not finish. Tap below to log in with LINE again "
                             "(you may be asked for your email and password or a QR code)."), 502,
                           retry_url=login_url(terms_version, attempt.oa_consent, auto=False,
                                               next_path=attempt.next_path), help_autologin=True)
        if exc.kind == "timeout":
            return failure("line_timeout", _("LINE did not answer in time"),
                           _("LINE is slow to answer right now. Please try again."), 504, retry_url=retry)
        if exc.kind == "token":
            return failure("token", _("LINE login failed"),
                           _("We could not confirm your LINE login. Please try again."), 502, retry_url=retry)
        return failure("line_error", _("LINE is having a problem"),
                       _("LINE could not complete the login just now. Please wait a moment and try again."), 502,
                       retry_url=retry)
    friend = _friendship(tokens.access_token)

    mac = client_mac(ip)
    if mac is None:
        _refuse("no_mac_for_ip", line_user_id=claims.sub)
        return failure("device", _("Device not found"),
                       _("We could not find your device on this WiFi. Reconnect to the WiFi and try again."), 409)
    seconds = cfg.portal.session_seconds
    changed = request.args.get("friendship_status_changed")
    try:
        svc.sessions.admit(Login(
            method="line", line_user_id=claims.sub, display_name=claims.name or "", friend=friend,
            friendship_changed=None if changed not in ("true", "false") else changed == "true",
            consent_version=attempt.terms_version, mac=mac, ip=ip,
            expires_ms=int((svc.clock() + seconds) * 1000)), seconds)
        log_event(svc.ledger, "oa_consent", claims.sub, given=attempt.oa_consent,
                  terms_version=attempt.terms_version, mac=mac)
    except LedgerError:
        log.exception("ledger write failed; the device stays at the portal")
        return failure("unavailable", _("WiFi login is temporarily unavailable"),
                       _("Please try again in a few minutes or ask the staff."), 503)
    except GateError as exc:
        log.warning("gate: %s; the device stays at the portal", exc)
        return failure("gate_unavailable", _("Just a moment"),
                       _("The WiFi is getting ready. Please try again in a moment."), 503,
                       retry_url=login_url(terms_version, attempt.oa_consent, next_path=attempt.next_path))
    except Exception:
        log.exception("gate failed; the device stays at the portal")
        return failure("unavailable", _("WiFi login is temporarily unavailable"),
                       _("Please try again in a few minutes or ask the staff."), 503)
    if attempt.oa_consent and friend is not False and cfg.line.messaging_access_token:
        with force_locale(attempt.lang):
            text = _("Welcome to DSD Free WiFi at %(office)s. You are online for %(hours)s hour(s).",
                     office=cfg.box.office, hours=max(1, seconds // 3600))
        push_welcome_async(cfg.line, svc.ledger, claims.sub, text)
    session["welcome"] = {"name": claims.name or ""}
    return redirect(attempt.next_path or url_for("login.welcome"), code=303)


def _friendship(access_token: str) -> bool | None:
    """Whether the visitor has the OA as a friend; unknown (None) if LINE does not say.
    Never a reason to refuse WiFi."""
    try:
        return services().line.friendship(access_token)
    except LineError as exc:
        log.warning("friendship status unavailable: %s", exc)
        return None


def _oa_link() -> str:
    oa = config().line.oa_basic_id
    return f"https://line.me/R/ti/p/{oa}" if oa else ""


@bp.get("/welcome")
def welcome():
    """Shown once the device is let through: time left and the Official Account."""
    auth = authorisation_for(client_ip())
    if auth is None:
        return no_store(redirect(url_for("login.splash"), code=302))
    info = session.get("welcome") or {}
    return no_store(Response(render_template(
        "welcome.html", name=info.get("name", ""), seconds=max(0, int(auth.expires)),
        oa_basic_id=config().line.oa_basic_id, oa_link=_oa_link(), logout_token=_logout_token())))


def _logout_token() -> str:
    if "logout" not in session:
        session["logout"] = new_token()
    return session["logout"]


@bp.post("/logout")
def logout():
    """The visitor ends their own session (a form on the welcome page; the token stops another
    site from logging people out)."""
    sent = request.form.get("token", "")
    if not sent or sent != session.get("logout"):
        return failure("invalid", _("Not allowed"), _("This page is not available from here."), 403)
    auth = authorisation_for(client_ip())
    if auth is not None:
        services().sessions.end(auth.mac, "logout")
    session.pop("logout", None)
    return no_store(Response(render_template("error.html", reason="logged_out", title=_("You are logged out"),
                                             message=_("Thank you for using DSD Free WiFi."), retry_url="/",
                                             lang_base="/")))


@bp.get("/waiting")
def waiting():
    """The mini-browser's page while the login is finished in the real browser: it refreshes
    itself (and polls /status with JavaScript) until the device is let through."""
    cfg = config()
    online = authorisation_for(client_ip()) is not None
    return no_store(Response(render_template("waiting.html", online=online, portal_url=cfg.portal.base_url + "/",
                                             browser=detect_browser(request.user_agent.string))))


@bp.get("/status")
def status():
    """This device's state as JSON, for the waiting page's polling."""
    auth = authorisation_for(client_ip())
    return no_store(jsonify(online=auth is not None, seconds_remaining=max(0, auth.expires) if auth else 0))
