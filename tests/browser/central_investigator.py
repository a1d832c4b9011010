"""An investigator at the central admin pages in headless Chromium, for end-to-end tests:

    python tests/browser/central_investigator.py [--label=LABEL] BASE_URL OUT_DIR NAME PASSWORD TOTP_SECRET \\
        CASE_REF IP PORT TIME [ZONE] [SLACK_S] [TOTP_AT_MS]

Logs in (password + TOTP), opens the case if it does not exist, runs the attribution search for the
internet server's log line (public IP, port, time in ZONE, default Asia/Bangkok) and prints one JSON
object: the candidates as the page shows them (box, MAC, LINE user, display name), the search as
the page states it, the box registry's text and the screenshots saved (named
central-investigator[-LABEL]-*.png). TOTP_AT_MS computes the code for another clock (a test centre's).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pyotp
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-features=DnsOverHttps"]


def investigate(base: str, out: Path, name: str, password: str, secret: str, case_ref: str, ip: str, port: str,
                when: str, zone: str = "Asia/Bangkok", slack_s: str = "60", totp_at_ms: int | None = None,
                label: str = "") -> dict:
    """Log in, open the case if needed, search; returns what the pages showed."""
    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {"shots": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="th-TH").new_page()

        def shot(what: str) -> None:
            path = out / f"central-investigator{'-' + label if label else ''}-{what}.png"
            page.screenshot(path=str(path), full_page=True)
            seen["shots"].append(str(path))

        page.goto(base.rstrip("/") + "/admin/login", wait_until="load")
        page.fill("#name", name)
        page.fill("#password", password)
        at = (totp_at_ms if totp_at_ms is not None else int(time.time() * 1000)) // 1000
        page.fill("#code", pyotp.TOTP(secret).at(at))
        page.click("#login")
        page.wait_for_selector("#boxes")
        seen["boxes_text"] = page.inner_text("#boxes")
        shot("boxes")
        page.click("#nav-cases")
        if page.locator("#cases a", has_text=case_ref).count() == 0:
            page.fill("#reference", case_ref)
            page.fill("#authority", "e2e")
            page.click("#open-case")
            page.wait_for_selector("#ranges")
        page.click("#nav-attribution")
        page.fill("#case_ref", case_ref)
        page.fill("#ip", ip)
        page.fill("#port", str(port))
        page.fill("#time", when)
        page.select_option("#zone", zone)
        page.fill("#slack_s", str(slack_s))
        page.click("#search")
        page.wait_for_selector("#results")
        shot("attribution")
        seen["stated"] = page.inner_text("#stated")
        seen["candidates"] = [{
            "box": r.locator("td").nth(1).inner_text().split("\n")[0].strip(),
            "mac": r.locator("td.mac").inner_text().strip(),
            "line_user_id": (r.locator("td.line-user code").inner_text().strip()
                             if r.locator("td.line-user code").count() else None),
            "display_name": "\n".join(r.locator("td.line-user").inner_text().split("\n")[1:]).strip(),
            "text": r.inner_text(),
        } for r in page.locator("tr.candidate").all()]
        browser.close()
    return seen


if __name__ == "__main__":
    opts = [x for x in sys.argv[1:] if x.startswith("--label=")]
    a = [x for x in sys.argv[1:] if x not in opts]
    if len(a) < 9:
        sys.exit(__doc__)
    json.dump(investigate(a[0], Path(a[1]), *a[2:9], *(a[9:11]),
                          **({"totp_at_ms": int(a[11])} if len(a) > 11 else {}),
                          label=opts[-1].split("=", 1)[1] if opts else ""), sys.stdout, ensure_ascii=False)
