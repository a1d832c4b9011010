"""The central admin pages (/admin): login (password + TOTP), box registry, attribution search,
LINE user search, export, cases, audit log, accounts.

Every POST carries the session's CSRF token. Every page that shows traffic data or admin data, every
search and every export writes an audit entry (admin, role, case, query, result count). An
investigator's search or export names an open case; an admin may name one.
"""
from __future__ import annotations

import functools
import hmac
import io
import ipaddress
import secrets
from pathlib import Path

from flask import (Blueprint, abort, redirect, render_template, request, send_file, session, url_for, g)
from flask_babel import gettext as _

from central import accounts, audit, cases
from central.admin import export as cexport
from central.admin.context import ctx, db
from central.admin.qr import qr_svg
from central.admin.timefmt import parse as parse_time

bp = Blueprint("cadmin", __name__, url_prefix="/admin",
               static_folder=str(Path(__file__).resolve().parent.parent / "static"), static_url_path="/static")
PUBLIC_ENDPOINTS = ("cadmin.login", "cadmin.do_login", "cadmin.static")


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def client_ip() -> str:
    """The admin's address: the peer, or with [admin] proxy_hops = N the address the N-th proxy from
    us saw (the header's N-th entry from the right; entries further left are the client's to forge).
    The slowing of failed logins counts per address, so behind a proxy this must be set."""
    hops = ctx().settings.proxy_hops
    if hops:
        chain = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return request.remote_addr or ""


def page(template: str, status: int = 200, **context):
    """Render an admin page with the CSRF token and the logged-in account."""
    return render_template(template, csrf=csrf_token(), me=g.get("account"), **context), status


def log(action: str, query: dict, result_count: int | None = None, case_ref: str | None = None) -> None:
    """Append to the audit log as the logged-in admin."""
    acc = g.get("account")
    audit.record(db(), ctx().now_ms(), acc.name if acc else "-", acc.role if acc else "-", action, query,
                 result_count, case_ref, client_ip())


@bp.before_request
def _guard():
    g.account = None
    token = session.get("sid")
    if token:
        s = ctx().settings
        g.account = accounts.session_account(db(), token, ctx().now_ms(), s.session_idle_s * 1000,
                                             s.session_max_s * 1000)
        if g.account is None:
            session.pop("sid", None)
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        if not sent or "csrf" not in session or not hmac.compare_digest(sent, session["csrf"]):
            audit.record(db(), ctx().now_ms(), g.account.name if g.account else "-",
                         g.account.role if g.account else "-", "refused", {"reason": "csrf", "path": request.path},
                         None, None, client_ip())
            return page("admin/error.html", 400, message=_("The form was stale or forged (CSRF check failed). "
                                                           "Reload the page and try again."))
    if request.endpoint not in PUBLIC_ENDPOINTS and g.account is None:
        return redirect(url_for("cadmin.login"), code=303)
    return None


@bp.after_request
def _no_store(resp):
    # Search results are personal data: never kept by the browser or a proxy.
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
    return resp


def requires(role: str):
    """Only accounts with `role` or above reach the page; others get 403 (and an audit entry)."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            if not g.account.can(role):
                log("refused", {"reason": "role", "path": request.path, "needs": role})
                return page("admin/error.html", 403, message=_("Your role does not allow this page."))
            return fn(*a, **kw)
        return wrapper
    return deco


# ---------------------------------------------------------------- login

@bp.get("/login")
def login():
    if g.account is not None:
        return redirect(url_for("cadmin.boxes"), code=303)
    return page("admin/login.html")


@bp.post("/login")
def do_login():
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    code = request.form.get("code", "").strip()
    conn, now, ip = db(), ctx().now_ms(), client_ip()
    wait = accounts.wait_seconds(conn, name, ip, now)
    if wait:
        audit.record(conn, now, name or "-", "-", "login_slowed", {"wait_s": wait}, None, None, ip)
        resp = page("admin/login.html", 429, error=_("Too many failed logins. Wait %(s)d seconds and try again.", s=wait),
                    name=name)
        return resp[0], 429, {"Retry-After": str(wait)}
    acc = accounts.authenticate(conn, name, password, code, ip, now)
    if acc is None:
        audit.record(conn, now, name or "-", "-", "login_failed", {}, None, None, ip)
        return page("admin/login.html", 401, error=_("Name, password or code is wrong."), name=name)
    session.clear()
    session["sid"] = accounts.start_session(conn, acc, ip, now)
    session["csrf"] = secrets.token_urlsafe(32)  # a new token after login: no fixation
    audit.record(conn, now, acc.name, acc.role, "login", {}, None, None, ip)
    return redirect(url_for("cadmin.boxes"), code=303)


@bp.post("/logout")
def logout():
    log("logout", {})
    accounts.end_session(db(), session.get("sid", ""))
    session.clear()
    return redirect(url_for("cadmin.login"), code=303)


# ---------------------------------------------------------------- boxes

@bp.get("/")
def boxes():
    now = ctx().now_ms()
    silent_ms = ctx().settings.silent_after_s * 1000
    rows = ctx().boxes(db())
    for b in rows:
        seen = b.get("last_seen_ms")
        # A revoked box is expected to be silent; every other box must be heard from in time.
        b["silent"] = not b.get("revoked_ms") and (seen is None or now - seen > silent_ms)
        b["silent_for_s"] = None if seen is None else max(0, (now - seen) // 1000)
    log("view_boxes", {}, len(rows))
    return page("admin/boxes.html", boxes=rows, silent_after_s=ctx().settings.silent_after_s, alerts=ctx().alerts(20),
                silent_count=sum(1 for b in rows if b["silent"]))


# ---------------------------------------------------------------- searches

def _case_for(action: str, query: dict) -> tuple[str | None, str | None]:
    """(case reference, error): investigators must name an open case; admins may."""
    ref = request.form.get("case_ref", "").strip()
    if not ref and g.account.role == "admin":
        return None, None
    try:
        return cases.require_open(db(), ref).reference, None
    except cases.CaseError:
        log("refused", {"reason": "case", "action": action, **query}, None, ref or None)
        return None, _case_error(ref)


def _case_error(ref: str) -> str:
    if not ref:
        return _("A case reference is required for searches and exports.")
    return _("No open case with the reference %(ref)s. Open the case first on the Cases page.", ref=ref)


def _open_cases() -> list:
    return [c for c in cases.all_cases(db()) if c.closed_ms is None]


@bp.get("/attribution")
@requires("investigator")
def attribution_form():
    return page("admin/attribution.html", form={"slack_s": ctx().settings.default_slack_s, "zone": "Asia/Bangkok"},
                open_cases=_open_cases())


@bp.post("/attribution")
@requires("investigator")
def attribution():
    f = request.form
    form = {k: f.get(k, "").strip() for k in ("case_ref", "ip", "port", "time", "zone", "slack_s")}
    errors = []
    try:
        ip = str(ipaddress.IPv4Address(form["ip"]))
    except ValueError:
        # The boxes translate IPv4 only (NAT); an IPv6 address never names a shared public address.
        errors.append(_("The public address is not an IPv4 address."))
        ip = None
    try:
        port = int(form["port"])
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        errors.append(_("The port must be a number from 1 to 65535."))
        port = None
    try:
        at_ms = parse_time(form["time"], form["zone"] or "Asia/Bangkok")
    except ValueError:
        errors.append(_("The time cannot be read. Write YYYY-MM-DD HH:MM:SS, or ISO 8601 with an offset."))
        at_ms = None
    try:
        slack_s = int(form["slack_s"] or ctx().settings.default_slack_s)
        if not 0 <= slack_s <= ctx().settings.max_slack_s:
            raise ValueError
    except ValueError:
        errors.append(_("The clock slack must be 0 to %(n)d seconds.", n=ctx().settings.max_slack_s))
        slack_s = None
    query = {"ip": form["ip"], "port": form["port"], "time": form["time"], "zone": form["zone"],
             "slack_s": form["slack_s"], "at_ms": at_ms}
    if errors:
        return page("admin/attribution.html", 400, form=form, errors=errors, open_cases=_open_cases())
    ref, err = _case_for("search_attribution", query)
    if err:
        return page("admin/attribution.html", 403, form=form, errors=[err], open_cases=_open_cases())
    rows = ctx().store.attribute(ip, port, at_ms, slack_s * 1000)
    log("search_attribution", query, len(rows), ref)
    return page("admin/attribution.html", form=form, results=rows, at_ms=at_ms, slack_s=slack_s, case_ref=ref,
                open_cases=_open_cases())


@bp.get("/users")
@requires("investigator")
def users_form():
    return page("admin/users.html", form={"zone": "Asia/Bangkok"}, open_cases=_open_cases())


def _window(form: dict) -> tuple[int | None, int | None, list[str]]:
    errors, start, end = [], None, None
    try:
        start = parse_time(form["start"], form["zone"] or "Asia/Bangkok")
        end = parse_time(form["end"], form["zone"] or "Asia/Bangkok")
        if end < start:
            errors.append(_("The window ends before it starts."))
    except ValueError:
        errors.append(_("The time cannot be read. Write YYYY-MM-DD HH:MM:SS, or ISO 8601 with an offset."))
    return start, end, errors


@bp.post("/users")
@requires("investigator")
def users():
    f = request.form
    form = {k: f.get(k, "").strip() for k in ("case_ref", "query", "start", "end", "zone")}
    errors = []
    if len(form["query"]) < 2:
        errors.append(_("Type a LINE user ID or at least 2 characters of a display name."))
    start, end, werr = _window(form)
    errors += werr
    query = {"query": form["query"], "start": form["start"], "end": form["end"], "zone": form["zone"],
             "start_ms": start, "end_ms": end}
    if errors:
        return page("admin/users.html", 400, form=form, errors=errors, open_cases=_open_cases())
    ref, err = _case_for("search_user", query)
    if err:
        return page("admin/users.html", 403, form=form, errors=[err], open_cases=_open_cases())
    rows = ctx().store.sessions_for_user(form["query"], start, end)
    log("search_user", query, len(rows), ref)
    return page("admin/users.html", form=form, results=rows, case_ref=ref, open_cases=_open_cases())


# ---------------------------------------------------------------- export

@bp.get("/export")
@requires("investigator")
def export_form():
    return page("admin/export.html", form={"zone": "Asia/Bangkok"}, boxes=ctx().boxes(db()), open_cases=_open_cases(),
                key_id=cexport.key_id(ctx().key.public_key()))


@bp.post("/export")
@requires("investigator")
def export():
    f = request.form
    form = {k: f.get(k, "").strip() for k in ("case_ref", "box_id", "start", "end", "zone")}
    known = {b["box_id"]: b for b in ctx().boxes(db())}
    errors = [] if form["box_id"] in known else [_("Choose a box.")]
    start, end, werr = _window(form)
    errors += werr
    if not werr and end - start > ctx().settings.max_export_days * 86_400_000:
        errors.append(_("One export covers at most %(n)d days: split the window.", n=ctx().settings.max_export_days))
    query = {"box_id": form["box_id"], "start": form["start"], "end": form["end"], "zone": form["zone"],
             "start_ms": start, "end_ms": end}
    again = dict(boxes=list(known.values()), open_cases=_open_cases(), key_id=cexport.key_id(ctx().key.public_key()))
    if errors:
        return page("admin/export.html", 400, form=form, errors=errors, **again)
    ref, err = _case_for("export", query)
    if err:
        return page("admin/export.html", 403, form=form, errors=[err], **again)
    now = ctx().now_ms()
    rows = ctx().store.export_rows(form["box_id"], start, end)
    box = known[form["box_id"]]
    name = f"export-{form['box_id']}-{now}-{secrets.token_hex(3)}"
    out = ctx().data_dir / "exports" / name
    manifest = cexport.write_export(out, ctx().key, rows, form["box_id"], str(box.get("office") or box.get("name") or ""),
                                    start, end, g.account.name, now, ref, ctx().chain_head(form["box_id"], end))
    archive = cexport.zip_dir(out)
    count = sum(v["rows"] for k, v in manifest["files"].items() if k.endswith(".csv"))
    log("export", {**query, "export": name, "files": manifest["files"],
                   "manifest_sha256": cexport._sha256(out / cexport.MANIFEST)}, count, ref)
    # Only the signed manifest stays on the centre (proof of what was handed over); the data itself
    # is already in the store, and a second copy of personal data would outlive its retention.
    body = io.BytesIO(archive.read_bytes())
    cexport.keep_manifest_only(out, archive)
    return send_file(body, mimetype="application/zip", as_attachment=True, download_name=archive.name)


@bp.get("/key")
def public_key():
    log("view_key", {})
    return page("admin/key.html", pem=cexport.public_pem(ctx().key), key_id=cexport.key_id(ctx().key.public_key()))


# ---------------------------------------------------------------- cases

@bp.get("/cases")
@requires("investigator")
def case_list():
    rows = cases.all_cases(db())
    log("view_cases", {}, len(rows))
    return page("admin/cases.html", cases=rows)


@bp.post("/cases")
@requires("investigator")
def case_open():
    f = request.form
    try:
        c = cases.open_case(db(), f.get("reference", ""), f.get("authority", ""), f.get("note", ""), g.account.name,
                            ctx().now_ms())
    except cases.CaseError as exc:
        return page("admin/cases.html", 400, cases=cases.all_cases(db()), error=str(exc), form=f)
    log("case_open", {"authority": c.authority}, None, c.reference)
    return redirect(url_for("cadmin.case_view", case_id=c.id), code=303)


@bp.get("/cases/<int:case_id>")
@requires("investigator")
def case_view(case_id: int, status: int = 200, error: str | None = None):
    c = cases.get(db(), case_id) or abort(404)
    rs = cases.ranges(db(), case_id)
    entries = audit.entries(db(), case_ref=c.reference, limit=100)
    if status == 200:
        log("view_case", {"case_id": case_id}, len(rs), c.reference)
    return page("admin/case.html", status, case=c, ranges=rs, entries=entries, error=error,
                boxes=ctx().boxes(db()))


@bp.post("/cases/<int:case_id>/ranges")
@requires("investigator")
def case_add_range(case_id: int):
    c = cases.get(db(), case_id) or abort(404)
    f = request.form
    form = {k: f.get(k, "").strip() for k in ("box_id", "start", "end", "keep_until", "zone")}
    start, end, errors = _window(form)
    keep = None
    if not errors:
        try:
            keep = parse_time(form["keep_until"], form["zone"] or "Asia/Bangkok") if form["keep_until"] else end
        except ValueError:
            errors.append(_("The time cannot be read. Write YYYY-MM-DD HH:MM:SS, or ISO 8601 with an offset."))
    if not errors:
        try:
            cases.add_range(db(), case_id, form["box_id"] or None, start, end, keep, f.get("hold") == "1",
                            g.account.name, ctx().now_ms())
        except cases.CaseError as exc:
            errors.append(str(exc))
    if errors:
        return case_view(case_id, 400, "; ".join(errors))
    log("case_keep", {**form, "hold": f.get("hold") == "1", "start_ms": start, "end_ms": end, "keep_until_ms": keep},
        None, c.reference)
    return redirect(url_for("cadmin.case_view", case_id=case_id), code=303)


@bp.post("/cases/<int:case_id>/ranges/<int:range_id>/release")
@requires("investigator")
def case_release(case_id: int, range_id: int):
    c = cases.get(db(), case_id) or abort(404)
    cases.release_hold(db(), range_id, g.account.name, ctx().now_ms())
    log("case_release_hold", {"range_id": range_id}, None, c.reference)
    return redirect(url_for("cadmin.case_view", case_id=case_id), code=303)


@bp.post("/cases/<int:case_id>/close")
@requires("investigator")
def case_close(case_id: int):
    c = cases.get(db(), case_id) or abort(404)
    cases.close_case(db(), case_id, ctx().now_ms())
    log("case_close", {}, None, c.reference)
    return redirect(url_for("cadmin.case_view", case_id=case_id), code=303)


# ---------------------------------------------------------------- audit, accounts (admins only)

@bp.get("/audit")
@requires("admin")
def audit_log():
    a = request.args
    before = a.get("before", type=int)
    rows = audit.entries(db(), limit=200, before_id=before, admin=a.get("admin") or None,
                         case_ref=a.get("case_ref") or None, action=a.get("action") or None)
    log("view_audit", {k: v for k, v in a.items() if k != "lang"}, len(rows))
    return page("admin/audit.html", entries=rows, filters=a)


@bp.get("/accounts")
@requires("admin")
def account_list(status: int = 200, error: str | None = None, created=None):
    rows = accounts.all_accounts(db())
    log("view_accounts", {}, len(rows))
    # The new key's otpauth URI as a QR code beside the text, for the authenticator app to scan.
    qr = qr_svg(created.totp_uri, "totp-qr", _("TOTP key for %(name)s", name=created.account.name)) if created else None
    return page("admin/accounts.html", status, accounts=rows, error=error, created=created, created_qr=qr,
                roles=accounts.ROLES)


@bp.post("/accounts")
@requires("admin")
def account_create():
    f = request.form
    try:
        new = accounts.create(db(), f.get("name", "").strip(), f.get("role", ""), f.get("password", ""),
                              g.account.name, ctx().now_ms())
    except accounts.AccountError as exc:
        return account_list(400, str(exc))
    log("account_create", {"name": new.account.name, "role": new.account.role})
    return account_list(created=new)


@bp.post("/accounts/<int:account_id>/<what>")
@requires("admin")
def account_change(account_id: int, what: str):
    f, conn = request.form, db()
    target = accounts.get(conn, account_id) or abort(404)
    created = None
    try:
        if what == "role":
            accounts.set_role(conn, account_id, f.get("role", ""))
        elif what == "disable":
            accounts.set_disabled(conn, account_id, True)
        elif what == "enable":
            accounts.set_disabled(conn, account_id, False)
        elif what == "totp":
            created = accounts.reset_totp(conn, account_id)
        else:
            abort(404)
    except accounts.AccountError as exc:
        return account_list(400, str(exc))
    log("account_" + what, {"name": target.name, "role": f.get("role") or None})
    return account_list(created=created)
