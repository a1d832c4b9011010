"""The box admin page (/admin): who is online now, revoke a device, box health.

No default password: admins are named in the config's [admin] users table with password
hashes (`skillspot admin hash-password`); with none configured the page refuses everyone and
says how to add one. Every POST carries a CSRF token kept in the session. With
[admin] networks set, only those source networks reach the page at all.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import shutil
import time
from pathlib import Path

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.security import check_password_hash, generate_password_hash

from ledger.records import active_logins, log_event
from netcfg.gate import GateError
from portal.clients import client_ip
from portal.context import config, services
from portal.urls import safe_next
from base.addr import normalise_mac

bp = Blueprint("admin", __name__, url_prefix="/admin")

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
    if cfg.admin.networks:
        try:
            addr = ipaddress.ip_address(client_ip())
        except ValueError:
            abort(403)
        if not any(addr in net for net in cfg.admin.networks):
            log_event(services().ledger, "admin_refused", client_ip(), reason="network")
            abort(403)
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
    stored = cfg.admin.users.get(name)
    ok = check_password_hash(stored or _DUMMY_HASH, password) and stored is not None
    next_path = safe_next(request.form.get("next")) or url_for("admin.home")
    if not ok:
        log_event(services().ledger, "admin_login_failed", client_ip(), name=name[:64])
        return _page("admin_login.html", 401, next_path=next_path, error=_("Wrong name or password."))
    session.clear()  # a fresh session (and CSRF token) for the logged-in admin
    session["admin"] = {"name": name, "until": time.time() + cfg.admin.session_minutes * 60}
    log_event(services().ledger, "admin_login", client_ip(), name=name)
    return redirect(next_path, code=303)


@bp.post("/logout")
def logout():
    """End the admin session."""
    session.pop("admin", None)
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
    return redirect(url_for("admin.home", notice=f"revoked {mac} ({', '.join(addresses) or 'no address'})"), code=303)
