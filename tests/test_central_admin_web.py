"""Central admin pages against a real centre: the app from create_app, the real chDB store filled
through the box API's ingest path, the real app database. Roles, TOTP login, slowed failures,
CSRF, secure cookies, case references, searches, export, audit. The browser journey is in
test_central_admin_browser.py and shares this module's centre (chDB: one store per process)."""
from __future__ import annotations

import io
import json
import re
import sqlite3
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization

from central import accounts, audit, cases
from central_admin_util import PW, Box, Centre, populate
from syncapi import signing

CASE = "ตช 0026.1/12345"


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    c = Centre(tmp_path_factory.mktemp("centre"))
    c.data = populate(c)
    for name, role in (("root", "admin"), ("inv", "investigator"), ("view", "viewer"), ("slow", "viewer")):
        c.account(name, role)
    yield c
    c.close()


def client(centre: Centre, ip: str = "127.0.0.1"):
    cl = centre.app.test_client()
    cl.environ_base.update({"wsgi.url_scheme": "https", "REMOTE_ADDR": ip})
    return cl


def csrf_of(resp) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', resp.get_data(as_text=True))
    assert m, resp.get_data(as_text=True)[:500]
    return m.group(1)


def login(centre: Centre, name: str, ip: str = "127.0.0.1"):
    centre.clock.ms += 30_000  # a fresh TOTP step: a code is accepted only once
    cl = client(centre, ip)
    token = csrf_of(cl.get("/admin/login"))
    resp = cl.post("/admin/login", data={"csrf": token, "name": name, "password": PW, "code": centre.code(name)})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/"), resp.get_data(as_text=True)[:800]
    cl.csrf = csrf_of(cl.get("/admin/"))
    return cl


def ensure_case(centre: Centre, ref: str) -> None:
    """The case exists (tests may run alone, in any order)."""
    conn = centre.services.appdb.connect()
    if cases.by_reference(conn, ref) is None:
        cases.open_case(conn, ref, "สภ.เมืองเชียงใหม่", "", "inv", centre.clock.ms)


def audit_rows(centre: Centre, **kw) -> list[audit.Entry]:
    return audit.entries(centre.services.appdb.connect(), limit=1000, **kw)


def test_login_sets_a_secure_httponly_strict_cookie_and_needs_the_totp_code(centre):
    cl = client(centre)
    assert cl.get("/admin/").status_code == 303  # not logged in: to the login page
    token = csrf_of(cl.get("/admin/login"))
    centre.clock.ms += 30_000
    bad = cl.post("/admin/login", data={"csrf": token, "name": "view", "password": PW, "code": "000000"})
    assert bad.status_code == 401
    ok = cl.post("/admin/login", data={"csrf": token, "name": "view", "password": PW, "code": centre.code("view")})
    assert ok.status_code == 303
    cookie = [h for h in ok.headers.getlist("Set-Cookie") if h.startswith("__Host-centre=")][0]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie, cookie
    assert "Domain" not in cookie
    page = cl.get("/admin/")
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    # Logging out ends the session on the server, not just in the browser.
    cookie_value = cl.get_cookie("__Host-centre", domain="localhost")
    assert cl.post("/admin/logout", data={"csrf": csrf_of(page)}).status_code == 303
    other = client(centre)
    other.set_cookie("__Host-centre", cookie_value.value, domain="localhost", secure=True)
    assert other.get("/admin/").status_code == 303


def test_repeated_failed_logins_are_slowed_even_with_the_right_password_then(centre):
    cl = client(centre, "192.0.2.50")
    token = csrf_of(cl.get("/admin/login"))
    statuses = []
    for _ in range(5):
        statuses.append(cl.post("/admin/login", data={"csrf": token, "name": "slow", "password": "guess guess guess",
                                                      "code": "123456"}).status_code)
    assert statuses == [401, 401, 401, 401, 429]
    right = cl.post("/admin/login", data={"csrf": token, "name": "slow", "password": PW, "code": centre.code("slow")})
    assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1
    assert "Wait" in right.get_data(as_text=True) or "รอ" in right.get_data(as_text=True)
    centre.clock.ms += 61_000
    ok = cl.post("/admin/login", data={"csrf": token, "name": "slow", "password": PW, "code": centre.code("slow")})
    assert ok.status_code == 303
    kinds = [e.action for e in audit_rows(centre, admin="slow")]
    assert kinds.count("login_failed") == 4 and "login_slowed" in kinds and kinds[0] == "login"


def test_a_form_without_the_csrf_token_is_refused_and_logged(centre):
    cl = login(centre, "root")
    for token in ("", "forged-token"):
        resp = cl.post("/admin/cases", data={"csrf": token, "reference": "CSRF-1", "authority": "x"})
        assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)
    assert cases.by_reference(centre.services.appdb.connect(), "CSRF-1") is None
    assert [e.query["reason"] for e in audit_rows(centre, action="refused")[:2]] == ["csrf", "csrf"]


def test_viewer_sees_the_box_registry_with_the_silent_box_flagged_but_cannot_search(centre):
    stranger = Box("box-xx99", "nowhere")  # never enrolled: the API refuses it and raises an alert
    body = b'{"version": "0.1.0"}'
    hdrs = signing.sign_request(stranger.key, "POST", "/api/v1/boxes/box-xx99/heartbeat", "box-xx99", body,
                                centre.clock.ms)
    assert centre.client.post("/api/v1/boxes/box-xx99/heartbeat", data=body, headers=hdrs).status_code == 401
    cl = login(centre, "view")
    page = cl.get("/admin/?lang=en").get_data(as_text=True)
    rows = dict(re.findall(r'<tr class="(silent|ok)" data-box="([^"]+)"', page)[i][::-1] for i in range(2))
    assert rows == {"box-cm01": "ok", "box-kk01": "silent"}
    assert "silent for 18" in page  # last heard 3 h before the clock minus the logins' steps
    assert "203.0.113.7" in page and "0.1.0" in page and "disk_free_pct" in page and "1.5 s" in page
    th = cl.get("/admin/?lang=th").get_data(as_text=True)
    assert "เงียบมา" in th and "สำนักงานพัฒนาฝีมือแรงงานขอนแก่น" in th
    assert re.search(r'<tr class="alert" data-kind="unknown_box">.*?box-xx99', page, re.S)
    assert cl.get("/admin/attribution").status_code == 403
    assert cl.post("/admin/attribution", data={"csrf": cl.csrf, "ip": "203.0.113.7", "port": "61000",
                                               "time": "2026-09-22 08:50:30", "zone": "Asia/Bangkok"}).status_code == 403
    assert cl.get("/admin/audit").status_code == 403
    assert audit_rows(centre, admin="view", action="view_boxes")[0].result_count == 2


def test_investigator_search_needs_an_open_case_and_shows_every_candidate(centre):
    cl = login(centre, "inv")
    form = {"csrf": cl.csrf, "ip": "203.0.113.7", "port": "61000", "time": "2026-09-22 08:51:00",
            "zone": "Asia/Bangkok", "slack_s": "60"}
    no_case = cl.post("/admin/attribution?lang=en", data=form)
    assert no_case.status_code == 403 and "case reference is required" in no_case.get_data(as_text=True)
    unknown = cl.post("/admin/attribution?lang=en", data={**form, "case_ref": "NOPE/1"})
    assert unknown.status_code == 403 and "Open the case first" in unknown.get_data(as_text=True)
    assert cl.post("/admin/cases", data={"csrf": cl.csrf, "reference": CASE, "authority": "สภ.เมืองเชียงใหม่",
                                         "note": "หนังสือลงวันที่ 22 ก.ย. 2569"}).status_code == 303
    resp = cl.post("/admin/attribution?lang=en", data={**form, "case_ref": CASE})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert html.count('class="candidate"') == 2 and "2 candidates match" in html
    for text in ("02:00:00:00:0a:01", "Uaaaa0000000000000000000000000001", "สมชาย ใจดี",
                 "02:00:00:00:0a:02", "Ubbbb0000000000000000000000000002", "box-cm01",
                 "2026-09-22 08:50:00.000", "2026-09-22 01:50:00.000Z",  # Bangkok with UTC beside
                 "± 60 s", "synced"):
        assert text in html, text
    # The same moment typed in UTC, without slack: only the first phone.
    one = cl.post("/admin/attribution?lang=en", data={**form, "case_ref": CASE, "time": "2026-09-22T01:50:10Z",
                                                      "zone": "UTC", "slack_s": "0"}).get_data(as_text=True)
    assert one.count('class="candidate"') == 1 and "02:00:00:00:0a:01" in one and "0a:02" not in one
    logged = audit_rows(centre, admin="inv", action="search_attribution")
    assert [(e.case_ref, e.result_count) for e in logged] == [(CASE, 1), (CASE, 2)]
    assert logged[1].query["ip"] == "203.0.113.7" and logged[1].query["slack_s"] == "60"
    refused = audit_rows(centre, admin="inv", action="refused")
    assert {e.query["reason"] for e in refused} == {"case"} and len(refused) == 2


def test_bad_search_input_gets_clear_errors_and_runs_no_search(centre):
    cl = login(centre, "root")
    before = len(audit_rows(centre, action="search_attribution"))
    resp = cl.post("/admin/attribution?lang=en", data={"csrf": cl.csrf, "ip": "203.0.113.999", "port": "70000",
                                                       "time": "22/09/2026", "zone": "Asia/Bangkok",
                                                       "slack_s": "99999"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400
    for msg in ("not an IPv4 address", "1 to 65535", "cannot be read", "clock slack must be"):
        assert msg in html, msg
    v6 = cl.post("/admin/attribution?lang=en", data={"csrf": cl.csrf, "ip": "2001:db8::1", "port": "443",
                                                     "time": "2026-09-22 08:51", "zone": "UTC", "slack_s": "5"})
    assert v6.status_code == 400 and "not an IPv4 address" in v6.get_data(as_text=True)
    assert len(audit_rows(centre, action="search_attribution")) == before
    # An admin may search without a case; it is still logged.
    ok = cl.post("/admin/attribution", data={"csrf": cl.csrf, "ip": "203.0.113.7", "port": "62005",
                                             "time": "2026-09-22 08:45:05", "zone": "Asia/Bangkok", "slack_s": "1"})
    assert ok.status_code == 200 and ok.get_data(as_text=True).count('class="candidate"') == 1
    e = audit_rows(centre, admin="root", action="search_attribution")[0]
    assert e.case_ref is None and e.result_count == 1


def test_line_user_search_finds_sessions_across_boxes(centre):
    cl = login(centre, "inv")
    ensure_case(centre, "USER-1")
    form = {"csrf": cl.csrf, "case_ref": "USER-1", "query": "สมชาย", "start": "2026-09-22 00:00",
            "end": "2026-09-22 23:59", "zone": "Asia/Bangkok"}
    html = cl.post("/admin/users?lang=en", data=form).get_data(as_text=True)
    assert html.count('class="session"') == 2 and "box-cm01" in html and "box-kk01" in html
    by_id = cl.post("/admin/users?lang=en", data={**form, "query": "Ubbbb0000000000000000000000000002"}).get_data(as_text=True)
    assert by_id.count('class="session"') == 1 and "Nok" in by_id
    assert [e.result_count for e in audit_rows(centre, admin="inv", action="search_user")][:2] == [1, 2]


def test_export_is_a_zip_the_box_verifier_accepts_with_the_centre_key(centre, tmp_path):
    from ledger.export import verify_export  # the official's check, the box's own code
    ensure_case(centre, CASE)
    cl = login(centre, "inv")
    form = {"csrf": cl.csrf, "case_ref": CASE, "box_id": "box-cm01", "start": "2026-09-22 08:00",
            "end": "2026-09-22 09:00", "zone": "Asia/Bangkok"}
    assert cl.post("/admin/export?lang=en", data={**form, "case_ref": ""}).status_code == 403
    bad = cl.post("/admin/export?lang=en", data={**form, "box_id": "nope", "end": "2026-09-21 00:00"})
    assert bad.status_code == 400 and "Choose a box" in bad.get_data(as_text=True)
    resp = cl.post("/admin/export", data=form)
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    zipfile.ZipFile(io.BytesIO(resp.data)).extractall(tmp_path)
    (out,) = list(tmp_path.iterdir())
    pem = re.search(r"(-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----)",
                    cl.get("/admin/key").get_data(as_text=True), re.S).group(1)
    pub = serialization.load_pem_public_key(pem.encode())
    assert verify_export(out, pub) == []
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["files"]["flows.csv"]["rows"] == 22 and manifest["files"]["sessions.csv"]["rows"] == 2
    assert manifest["case_ref"] == CASE and manifest["admin"] == "inv" and manifest["chain_head"]["seq"] >= 1
    assert "สมชาย ใจดี" in (out / "sessions.csv").read_text(encoding="utf-8-sig")
    e = audit_rows(centre, admin="inv", action="export")[0]
    assert e.case_ref == CASE and e.result_count == 24 and e.query["box_id"] == "box-cm01"
    # The centre keeps only the signed manifest of what it handed over, not a second copy of the data.
    kept = list((centre.config.data_dir / "exports").iterdir())
    assert [p.name for p in kept] == [e.query["export"] + ".manifest.json"]
    assert json.loads(kept[0].read_text(encoding="utf-8")) == manifest


def test_audit_log_page_is_for_admins_and_the_table_cannot_be_edited(centre):
    for action in ("search_attribution", "export"):  # rows of another investigator under the case
        audit.record(centre.services.appdb.connect(), centre.clock.ms, "malai", "investigator", action,
                     {"ip": "203.0.113.7"}, 1, CASE, "192.0.2.1")
    inv = login(centre, "inv")
    assert inv.get("/admin/audit").status_code == 403
    root = login(centre, "root")
    html = root.get(f"/admin/audit?lang=en&case_ref={CASE}").get_data(as_text=True)
    assert "search_attribution" in html and "export" in html
    conn = centre.services.appdb.connect()
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE audit_log SET admin = 'someone else'")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM audit_log WHERE action = 'export'")
    assert audit.verify(conn) == []
    assert audit_rows(centre, admin="root", action="view_audit")[0].query == {"case_ref": CASE}


def test_admin_manages_accounts_and_case_retention_through_the_pages(centre):
    ensure_case(centre, CASE)
    cl = login(centre, "root")
    resp = cl.post("/admin/accounts?lang=en", data={"csrf": cl.csrf, "name": "malee", "role": "viewer",
                                                    "password": "another long secret"})
    html = resp.get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', html).group(1)
    assert len(secret) >= 16
    weak = cl.post("/admin/accounts?lang=en", data={"csrf": cl.csrf, "name": "weak", "role": "viewer", "password": "x"})
    assert weak.status_code == 400 and "12 characters" in weak.get_data(as_text=True)
    conn = centre.services.appdb.connect()
    malee = [a for a in accounts.all_accounts(conn) if a.name == "malee"][0]
    cl.post(f"/admin/accounts/{malee.id}/role", data={"csrf": cl.csrf, "role": "investigator"})
    assert accounts.get(conn, malee.id).role == "investigator"
    case = cases.by_reference(conn, CASE)
    too_long = cl.post(f"/admin/cases/{case.id}/ranges?lang=en", data={
        "csrf": cl.csrf, "box_id": "box-cm01", "start": "2026-09-22 08:00", "end": "2026-09-22 09:00",
        "keep_until": "2028-09-23 00:00", "zone": "Asia/Bangkok"})
    assert too_long.status_code == 400 and "at most 2 years" in too_long.get_data(as_text=True)
    assert cl.post(f"/admin/cases/{case.id}/ranges", data={
        "csrf": cl.csrf, "box_id": "box-cm01", "start": "2026-09-22 08:00", "end": "2026-09-22 09:00",
        "keep_until": "2028-09-20 00:00", "zone": "Asia/Bangkok", "hold": "1"}).status_code == 303
    held = centre.services.appdb.held_ranges(centre.clock.ms + 5 * 365 * 86_400_000)
    assert [(h.box_id, h.until_ms) for h in held] == [("box-cm01", None)]
    assert {"account_create", "account_role", "case_keep"} <= {e.action for e in audit_rows(centre, admin="root")}
