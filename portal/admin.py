"""The box admin page (/admin): who is online now, revoke a device, box health.

No default password: admins are named in the config's [admin] users table with password
hashes (`skillspot admin hash-password`); with none configured the page refuses everyone and
says how to add one. Every POST carries a CSRF token kept in the session.

The visitor LAN is an open WiFi: anyone on it can read plain HTTP. So the admin pages answer
only over HTTPS, and only to [admin] networks (none of which may overlap the visitor LAN; an
empty list means the box itself only, e.g. through `ssh -L`). The admin session is a cookie of
its own (Secure, HttpOnly, SameSite=Strict, path /admin), apart from the visitors' session
cookie, which must stay Lax and work over HTTP for the LINE callback. Failed logins are slowed
per source and per name (portal/throttle.py), and every admin action is a ledger event
carrying the admin's name.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import shutil
import time
from pathlib import Path

from flask import Blueprint, Flask, abort, current_app, has_request_context, redirect, render_template, request, \
    session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_babel import gettext as _
from werkzeug.security import check_password_hash, generate_password_hash

from ledger.records import active_logins, log_event
from netcfg.gate import GateError
from portal.clients import client_ip
from portal.context import config, services
from portal.throttle import LoginThrottle
from portal.urls import safe_next
from base.addr import normalise_mac

bp = Blueprint("admin", __name__, url_prefix="/admin")
ADMIN_COOKIE = "skillspot_admin"
THROTTLE_KEY = "skillspot_admin_throttle"


def _is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


class _AdminCookie(SecureCookieSessionInterface):
    """The admin's session cookie: Secure, HttpOnly, SameSite=Strict, path /admin, signed
    with a salt of its own (a visitor's session cookie can never pass as an admin's)."""

    salt = "skillspot-admin-session"

    def get_cookie_name(self, app: Flask) -> str:
        return ADMIN_COOKIE

    def get_cookie_secure(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_path(self, app: Flask) -> str:
        return "/admin"


class AdminAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session for visitors; the admin cookie under /admin."""

    def __init__(self) -> None:
        self._admin = _AdminCookie()

    def open_session(self, app: Flask, request):
        if _is_admin_path(request.path):
            return self._admin.open_session(app, request)
        return super().open_session(app, request)

    def save_session(self, app: Flask, session, response) -> None:
        if has_request_context() and _is_admin_path(request.path):
            return self._admin.save_session(app, session, response)
        return super().save_session(app, session, response)


@bp.record_once
def _install(state) -> None:
    """Give the app the admin-aware session cookie and the shared failed-login store."""
    app = state.app
    app.session_interface = AdminAwareSessionInterface()
    cfg = app.config["SKILLSPOT"]
    app.extensions[THROTTLE_KEY] = LoginThrottle(cfg.box.data_dir / "admin-throttle.sqlite")


def _throttle() -> LoginThrottle:
    return current_app.extensions[THROTTLE_KEY]


def from_management_network(ip: str) -> bool:
    """Whether `ip` may reach the admin pages: inside [admin] networks, or, with none
    configured, the box itself (loopback or its own LAN address)."""
    cfg = config()
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    if cfg.admin.networks:
        return any(addr in net for net in cfg.admin.networks)
    own = {cfg.network.lan_address.ip}
    if cfg.network.lan_address6 is not None:
        own.add(cfg.network.lan_address6.ip)
    return addr.is_loopback or addr in own

# Compared against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _page(template: str, status: int = 200, **context):
    return render_template(template, csrf=csrf_token(), lang_base=request.path, **context), status


def current_admin() -> str | None:
    """The logged-in admin's name, or None (also when the login has timed out or the admin
    was removed from the config since)."""
    info = session.get("admin")
    if not isinstance(info, dict) or info.get("until", 0) < time.time():
        return None
    name = info.get("name")
    return name if name in config().admin.users else None


@bp.before_request
def _guard():
    cfg = config()
    if not from_management_network(client_ip()):
        log_event(services().ledger, "admin_refused", client_ip(), reason="network", path=request.path)
        abort(403)
    if not request.is_secure:
        # No redirect: the login form must never be offered, or followed, over plain HTTP.
        log_event(services().ledger, "admin_refused", client_ip(), reason="plain_http", path=request.path)
        return render_template("admin_error.html", csrf="", lang_base=request.path,
                               message=_("The admin pages are served only over HTTPS.")), 403
    if not cfg.admin.users:
        return _page("admin_unconfigured.html", 403)
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        if not sent or "csrf" not in session or not hmac.compare_digest(sent, session["csrf"]):
            log_event(services().ledger, "admin_refused", client_ip(), reason="csrf", path=request.path)
            return _page("admin_error.html", 400, message=_("The form was stale or forged (CSRF check failed). "
                                                            "Reload the page and try again."))
    if request.endpoint not in ("admin.login", "admin.do_login") and current_admin() is None:
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")), code=303)
    return None


@bp.get("/login")
def login():
    """The admin login form."""
    return _page("admin_login.html", next_path=safe_next(request.args.get("next")) or "", error="")


@bp.post("/login")
def do_login():
    """Check a name and password against the configured hashes."""
    cfg = config()
    name = request.form.get("name", "")
    password = request.form.get("password", "")
    next_path = safe_next(request.form.get("next")) or url_for("admin.home")
    keys = LoginThrottle.keys(client_ip(), name)
    wait = _throttle().wait_seconds(keys)
    if wait > 0:
        # Refused before the password is even checked: a guesser learns nothing while waiting.
        log_event(services().ledger, "admin_login_throttled", client_ip(), name=name[:64], wait_s=round(wait, 1))
        page, status = _page("admin_login.html", 429, next_path=next_path,
                             error=_("Too many failed logins. Try again in %(seconds)d seconds.",
                                     seconds=int(wait) + 1))
        return page, status, {"Retry-After": str(int(wait) + 1)}
    stored = cfg.admin.users.get(name)
    ok = check_password_hash(stored or _DUMMY_HASH, password) and stored is not None
    if not ok:
        _throttle().failed(keys)
        log_event(services().ledger, "admin_login_failed", client_ip(), name=name[:64])
        return _page("admin_login.html", 401, next_path=next_path, error=_("Wrong name or password."))
    _throttle().succeeded(keys)
    session.clear()  # a fresh session (and CSRF token) for the logged-in admin
    session["admin"] = {"name": name, "until": time.time() + cfg.admin.session_minutes * 60}
    log_event(services().ledger, "admin_login", client_ip(), name=name)
    return redirect(next_path, code=303)


@bp.post("/logout")
def logout():
    """End the admin session."""
    admin = current_admin()
    session.pop("admin", None)
    log_event(services().ledger, "admin_logout", client_ip(), admin=admin)
    return redirect(url_for("admin.login"), code=303)


def _disk(path: Path) -> dict:
    usage = shutil.disk_usage(path)
    return {"free_mb": usage.free // 2**20, "total_mb": usage.total // 2**20,
            "used_percent": round(100 * (usage.total - usage.free) / usage.total, 1) if usage.total else 0}


def _uptime_seconds() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def health() -> dict:
    """Ledger size, disk free where the ledger lives, system and portal uptime."""
    svc = services()
    ledger_path = Path(svc.ledger.path)
    size = sum(p.stat().st_size for p in (ledger_path, Path(f"{ledger_path}-wal")) if p.exists())
    try:
        gate = svc.gate.health()
    except GateError as exc:
        gate = {"ok": False, "error": str(exc)}
    return {"ledger_mb": round(size / 2**20, 2), "disk": _disk(ledger_path.parent),
            "system_uptime_s": _uptime_seconds(), "portal_uptime_s": round(time.time() - svc.started),
            "gate": gate}


def online_clients() -> list[dict]:
    """gate.authorised() joined with each device's newest active login."""
    svc = services()
    logins: dict[str, dict] = {}
    for row in active_logins(svc.ledger):  # newest first
        logins.setdefault(row["mac"], row)
    clients = []
    for auth in sorted(svc.gate.authorised(), key=lambda a: tuple(int(x) for x in a.ip.split("."))):
        row = logins.get(auth.mac, {})
        clients.append({"mac": auth.mac, "ip": auth.ip, "seconds_left": auth.expires,
                        "name": row.get("display_name", ""), "line_user_id": row.get("line_user_id", ""),
                        "method": row.get("method", ""), "since_ms": row.get("at_ms")})
    return clients


@bp.get("")
@bp.get("/")
def home():
    """Clients online now and box health."""
    # Seeing who is online is access to traffic data: the ledger says which admin looked.
    log_event(services().ledger, "admin_view", client_ip(), admin=current_admin(), page="online")
    return _page("admin.html", admin=current_admin(), clients=online_clients(), health=health(),
                 notice=request.args.get("notice", ""))


@bp.post("/revoke")
def revoke():
    """Shut one device out now: gate, logout row, event with the admin's name, RADIUS Disconnect."""
    svc = services()
    admin = current_admin()
    try:
        mac = normalise_mac(request.form.get("mac", ""))
    except ValueError:
        return _page("admin_error.html", 400, message=_("That is not a MAC address; nothing was revoked."))
    # The session layer shuts the gate, writes the logout row and sends the RADIUS Disconnect.
    addresses = svc.sessions.end(mac, "admin_revoke", admin=admin)
    log_event(svc.ledger, "admin_revoke", mac, admin=admin, source=client_ip(), addresses=addresses)
    return redirect(url_for("admin.home", notice=f"revoked {mac} ({', '.join(addresses) or 'no address'})"), code=303)
