"""OA admin pages under /admin/oa, behind the centre's admin login, TOTP and CSRF guard
(central.admin.views._guard) and its roles: viewers see courses, attendance and charts;
admins edit courses, sessions, vacancies, import CSV and send news."""
from __future__ import annotations

import csv
import io
from typing import Any

from flask import Blueprint, Response, current_app, redirect, request, url_for

from central.admin.qr import qr_svg
from central.admin.timefmt import parse as parse_time
from central.admin.views import _guard, _no_store, log, page, requires
from central.oa.service import OaError, _rows


def _oa() -> Any:
    return current_app.extensions["skillspot_oa"].oa


def csv_response(name: str, rows: list[dict], fields: list[str]) -> Response:
    """Rows as a CSV download (UTF-8 with BOM so Thai opens right in spreadsheet programs)."""
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def svg_bars(rows: list[dict], label: str, series: list[str]) -> str:
    """A small horizontal bar chart as inline SVG (served by the centre itself, no CDN, no JS)."""
    if not rows:
        return "<p>-</p>"
    top = max(1, max(int(r.get(s) or 0) for r in rows for s in series))
    colours = ["#06c755", "#3060c0", "#c06030"]
    h, parts = 18 * len(series) + 6, []
    for i, r in enumerate(rows[:40]):
        y = i * h
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{_esc(str(r.get(label, "")))[:40]}</text>')
        for j, s in enumerate(series):
            w = int(300 * int(r.get(s) or 0) / top)
            parts.append(f'<rect x="260" y="{y + j * 18}" width="{w}" height="15" fill="{colours[j % 3]}">'
                         f'<title>{_esc(s)}: {r.get(s)}</title></rect>'
                         f'<text x="{265 + w}" y="{y + j * 18 + 12}" font-size="11">{r.get(s)}</text>')
    legend = " ".join(f'<span style="color:{colours[j % 3]}">■ {_esc(s)}</span>' for j, s in enumerate(series))
    return (f'<p>{legend}</p><svg xmlns="http://www.w3.org/2000/svg" width="640" height="{h * min(len(rows), 40)}" '
            f'role="img">{"".join(parts)}</svg>')


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def create_admin_blueprint() -> Blueprint:
    bp = Blueprint("oa_admin", __name__, url_prefix="/admin/oa")
    bp.before_request(_guard)
    bp.after_request(_no_store)

    @bp.app_context_processor
    def _nav() -> dict:
        return {"oa_nav": True}  # the admin header shows the OA link (central/templates/admin/base.html)

    @bp.get("/")
    @requires("viewer")
    def index() -> Any:
        oa = _oa()
        conn = oa.connect()
        courses = _rows(conn, "SELECT c.*, (SELECT count(*) FROM oa_questions q WHERE q.course_id = c.id) AS questions "
                              "FROM oa_courses c ORDER BY office, code")
        sessions = _rows(conn, """SELECT s.*, c.code, c.office, (SELECT count(*) FROM oa_registrations r WHERE r.session_id = s.id
                                  AND r.status = 'confirmed') AS taken, (SELECT count(*) FROM oa_registrations r WHERE
                                  r.session_id = s.id AND r.status = 'waitlist') AS waiting FROM oa_sessions s
                                  JOIN oa_courses c ON c.id = s.course_id ORDER BY s.starts_ms DESC LIMIT 200""")
        vacancies = _rows(conn, "SELECT * FROM oa_vacancies ORDER BY status DESC, closes_on LIMIT 300")
        return page("oa/index.html", courses=courses, sessions=sessions, vacancies=vacancies,
                    error=request.args.get("error"), done=request.args.get("done"))

    def back(error: str | None = None, done: str | None = None) -> Any:
        return redirect(url_for("oa_admin.index", error=error, done=done), code=303)

    @bp.post("/courses")
    @requires("admin")
    def add_course() -> Any:
        f = request.form
        try:
            cid = _oa().add_course(f.get("code", ""), f.get("office", ""), f.get("province", ""), f.get("title_th", ""),
                                   f.get("title_en", ""), f.get("skills", ""))
        except OaError as exc:
            return back(error=str(exc))
        log("oa_course_add", {"id": cid, "code": f.get("code")})
        return back(done=f"course {cid}")

    @bp.post("/sessions")
    @requires("admin")
    def add_session() -> Any:
        f = request.form
        try:
            sid = _oa().add_session(int(f.get("course_id", "0")), parse_time(f.get("starts", ""), "Asia/Bangkok"),
                                    parse_time(f.get("ends", ""), "Asia/Bangkok"), int(f.get("capacity", "0")), f.get("place", ""))
        except (OaError, ValueError) as exc:
            return back(error=str(exc))
        log("oa_session_add", {"id": sid})
        return back(done=f"session {sid}")

    @bp.post("/import/<kind>")
    @requires("admin")
    def import_csv(kind: str) -> Any:
        if kind not in ("courses", "vacancies", "questions"):
            return back(error="import courses, vacancies or questions")
        up = request.files.get("file")
        try:
            n = _oa().import_csv(kind, up.read() if up else b"")
        except OaError as exc:
            return back(error=str(exc))
        log("oa_import", {"kind": kind, "rows": n}, n)
        return back(done=f"{n} {kind} imported")

    @bp.post("/vacancies")
    @requires("admin")
    def add_vacancy() -> Any:
        f = request.form
        try:
            vid = _oa().add_vacancy(f.get("employer", ""), f.get("position", ""), f.get("skills", ""),
                                    f.get("province", ""), f.get("wage", ""), f.get("closes_on", ""))
        except OaError as exc:
            return back(error=str(exc))
        log("oa_vacancy_add", {"id": vid})
        return back(done=f"vacancy {vid}")

    @bp.post("/vacancies/<int:vid>/<status>")
    @requires("admin")
    def vacancy_status(vid: int, status: str) -> Any:
        try:
            _oa().set_vacancy_status(vid, status)
        except OaError as exc:
            return back(error=str(exc))
        log("oa_vacancy_" + status, {"id": vid})
        return back(done=f"vacancy {vid} {status}")

    @bp.get("/sessions/<int:sid>/attendance")
    @requires("viewer")
    def attendance(sid: int) -> Any:
        oa = _oa()
        s = oa.session(sid)
        if s is None:
            return back(error=f"no session {sid}")
        rows = oa.attendance_sheet(sid)
        log("oa_attendance_view", {"session": sid}, len(rows))
        if request.args.get("format") == "csv":
            from central.admin.timefmt import bangkok
            for r in rows:
                r["checked_in_bangkok"] = bangkok(r["checked_in_ms"]) if r["checked_in_ms"] else ""
            names = oa.display_names([r["user_id"] for r in rows])
            for r in rows:
                r["display_name"] = names.get(r["user_id"], "")
            return csv_response(f"attendance-session-{sid}", rows,
                                ["user_id", "display_name", "status", "checked_in_bangkok", "checked_in_ms", "method"])
        link = oa.checkin_link(sid)
        names = oa.display_names([r["user_id"] for r in rows])
        for r in rows:
            r["display_name"] = names.get(r["user_id"], "")
        return page("oa/attendance.html", s=s, rows=rows, link=link, qr=qr_svg(link, "checkin-qr", scale=8))

    @bp.get("/news")
    @requires("admin")
    def news() -> Any:
        f = request.args
        try:
            preview = _oa().preview_broadcast(f.get("office", ""), f.get("province", ""))
        except Exception as exc:  # LINE unreachable: say so, send nothing
            preview, f = None, {}
            return page("oa/news.html", preview=None, error=f"could not read the quota from LINE: {exc}", form=f,
                        history=_oa().broadcasts())
        return page("oa/news.html", preview=preview, form=f, history=_oa().broadcasts())

    @bp.post("/news")
    @requires("admin")
    def send_news() -> Any:
        f = request.form
        from flask import g
        try:
            at = parse_time(f["send_at"], "Asia/Bangkok") if f.get("send_at", "").strip() else None
            res = _oa().send_broadcast(f.get("text_th", ""), f.get("text_en", ""), f.get("office", ""),
                                       f.get("province", ""), g.account.name, at)
        except (OaError, ValueError) as exc:
            log("oa_news_refused", {"reason": str(exc)})
            return page("oa/news.html", 409, preview=None, error=str(exc), form=f, history=_oa().broadcasts())
        log("oa_news_send", {"id": res["id"], "recipients": res["recipients"]}, res["recipients"])
        return back(done=f"news {res['id']} queued for {res['recipients']} people")

    @bp.get("/charts")
    @requires("viewer")
    def charts() -> Any:
        from central.oa.synced import friends_brought, wifi_visitors
        oa = _oa()
        which = request.args.get("csv")
        now = oa.clock_ms()
        days = max(1, min(366, int(request.args.get("days", "31") or 31)))
        tv = oa.chart_trainees_vs_vacancies()
        visits = wifi_visitors(oa.store, now - days * 86_400_000, now + 86_400_000) if oa.store else []
        fw = friends_brought(oa.store, now - 366 * 86_400_000, now + 86_400_000) if oa.store else []
        log("oa_charts", {"csv": which})
        if which == "skills":
            return csv_response("trainees-vs-vacancies", tv, ["province", "month", "skill", "trainees", "vacancies"])
        if which == "visitors":
            return csv_response("wifi-visitors", visits, ["office", "day", "visitors"])
        if which == "friends":
            return csv_response("friends-via-wifi", fw, ["office", "month", "friends"])
        for r in tv:
            r["label"] = f"{r['province']} {r['month']} {r['skill']}"
        for r in visits:
            r["label"] = f"{r['office']} {r['day']}"
        for r in fw:
            r["label"] = f"{r['office']} {r['month']}"
        return page("oa/charts.html", skills=svg_bars(tv, "label", ["trainees", "vacancies"]),
                    visitors=svg_bars(visits, "label", ["visitors"]), friends=svg_bars(fw, "label", ["friends"]))

    return bp
