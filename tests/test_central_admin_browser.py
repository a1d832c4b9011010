"""An investigator and an admin at the central pages in headless Chromium (Debian's, driven by
Playwright), Thai and English, against a real centre (chDB store filled through the box API),
served over loopback on a port of this run. Screenshots go to artifacts/screenshots/."""
from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from central import audit
from central_admin_util import PW, Centre, populate

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-features=DnsOverHttps"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium fonts-thai-tlwg)")
    c = Centre(tmp_path_factory.mktemp("centre-browser"))
    c.data = populate(c)
    c.account("root", "admin")
    c.account("inv", "investigator")
    server = make_server("127.0.0.1", 0, c.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # localhost, not 127.0.0.1: browsers treat it as a secure context, so the Secure __Host- cookie
    # is kept over plain HTTP here exactly as it is over HTTPS in production.
    c.base = f"http://localhost:{server.server_port}"
    try:
        yield c
    finally:
        server.shutdown()
        thread.join(timeout=10)
        c.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def login(page, centre: Centre, name: str) -> None:
    centre.clock.ms += 30_000  # a fresh TOTP step
    page.goto(centre.base + "/admin/", wait_until="load")
    assert page.url.endswith("/admin/login")
    page.fill("#name", name)
    page.fill("#password", PW)
    page.fill("#code", centre.code(name))
    page.click("#login")
    page.wait_for_selector("#boxes")


@pytest.mark.parametrize("lang,width,height", [("th", 1280, 900), ("en", 1280, 900), ("th", 390, 844)])
def test_investigator_finds_the_person_behind_an_address_and_exports(served, browser, lang, width, height, tmp_path):
    centre = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True,
                              locale="th-TH" if lang == "th" else "en-US")
    page = ctx.new_page()
    shots = []

    def shot(name: str) -> None:
        path = ARTIFACTS / f"central-admin-{lang}-{width}x{height}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    page.goto(f"{centre.base}/admin/login?lang={lang}", wait_until="load")
    assert ("เข้าสู่ระบบ" if lang == "th" else "Log in") in page.inner_text("h1")
    shot("1-login")
    login(page, centre, "inv")
    cookies = {c["name"]: c for c in ctx.cookies()}
    session = cookies["__Host-centre"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("__Host-centre") == -1  # scripts cannot read it
    silent = page.locator('tr.silent[data-box="box-kk01"]')
    assert silent.count() == 1 and page.locator('tr.ok[data-box="box-cm01"]').count() == 1
    assert ("เงียบมา" if lang == "th" else "silent for") in silent.inner_text()
    shot("2-boxes")

    case_ref = f"ตช 0026.1/{lang}{width}"
    page.click("#nav-cases")
    page.fill("#reference", case_ref)
    page.fill("#authority", "สภ.เมืองเชียงใหม่")
    page.click("#open-case")
    page.wait_for_selector("#ranges")

    page.click("#nav-attribution")
    # The log line of the web server: 203.0.113.7:61000 at 08:51:00 Bangkok, clock slack 60 s.
    page.fill("#ip", "203.0.113.7")
    page.fill("#port", "61000")
    page.fill("#time", "2026-09-22 08:51:00")
    page.fill("#slack_s", "60")
    page.click("#search")  # without a case reference the browser itself refuses (required field)
    assert page.locator("#results").count() == 0
    page.fill("#case_ref", case_ref)
    page.click("#search")
    page.wait_for_selector("#results")
    rows = page.locator("tr.candidate")
    assert rows.count() == 2 and page.locator("#several").count() == 1
    first = rows.nth(0).inner_text()
    assert "02:00:00:00:0a:01" in first and "Uaaaa0000000000000000000000000001" in first and "สมชาย ใจดี" in first
    assert "2026-09-22 08:50:00.000" in first and "2026-09-22 01:50:00.000Z" in first
    assert "02:00:00:00:0a:02" in rows.nth(1).inner_text()
    # Wide tables scroll inside themselves; the page itself never gets wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "page wider than the screen"
    shot("3-attribution")

    page.click("#nav-users")
    page.fill("#case_ref", case_ref)
    page.fill("#query", "สมชาย")
    page.fill("#start", "2026-09-22 00:00")
    page.fill("#end", "2026-09-22 23:59")
    page.click("#search")
    page.wait_for_selector("#results")
    assert page.locator("tr.session").count() == 2
    shot("4-user")

    page.click("#nav-export")
    page.fill("#case_ref", case_ref)
    page.select_option("#box_id", "box-cm01")
    page.fill("#start", "2026-09-22 08:00")
    page.fill("#end", "2026-09-22 09:00")
    shot("5-export")
    with page.expect_download() as dl:
        page.click("#export")
    target = tmp_path / dl.value.suggested_filename
    dl.value.save_as(target)
    with zipfile.ZipFile(target) as zf:
        names = sorted(Path(n).name for n in zf.namelist())
        manifest = json.loads(next(zf.read(n) for n in zf.namelist() if n.endswith("manifest.json")))
    assert names == ["flows.csv", "flows.jsonl", "manifest.json", "sessions.csv", "sessions.jsonl"]
    assert manifest["case_ref"] == case_ref and manifest["files"]["sessions.csv"]["rows"] == 2

    page.click("#logout")
    page.wait_for_selector("#login-form")
    login(page, centre, "root")
    page.click("#nav-audit")
    page.wait_for_selector("#audit")
    logged = audit.entries(centre.services.appdb.connect(), case_ref=case_ref)
    assert [e.action for e in logged][::-1] == ["case_open", "view_case", "search_attribution", "search_user", "export"]
    assert [e.result_count for e in logged if e.action.startswith("search")] == [2, 2]
    assert page.locator("tr.entry").count() >= 5
    shot("6-audit")
    page.click("#nav-accounts")
    page.wait_for_selector("#accounts")
    shot("7-accounts")
    for s in shots:
        assert s.stat().st_size > 5000, s
    ctx.close()


def test_the_e2e_investigator_script_finds_the_person_from_a_log_line(served):
    """tests/browser/central_investigator.py is what the office-to-centre journey runs; check it here."""
    import subprocess
    import sys
    centre = served
    centre.clock.ms += 30_000
    script = Path(__file__).resolve().parent / "browser" / "central_investigator.py"
    # The internet server logged 203.0.113.7:61000 at 01:50:20 UTC.
    proc = subprocess.run([sys.executable, str(script), centre.base, str(ARTIFACTS), "inv", PW, centre.secrets["inv"],
                           "E2E/1", "203.0.113.7", "61000", "2026-09-22T01:50:20Z", "UTC", "5", str(centre.clock.ms)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert [(c["box"], c["mac"], c["line_user_id"]) for c in seen["candidates"]] == [
        ("box-cm01", "02:00:00:00:0a:01", "Uaaaa0000000000000000000000000001")]
    assert audit.entries(centre.services.appdb.connect(), case_ref="E2E/1", action="search_attribution")[0].result_count == 1
