"""A visitor's journey in headless Chromium, run inside the phone namespace by the browser tests:

    python tests/browser/journey.py OUT_DIR LANG WIDTH HEIGHT [USER_AGENT]

Prints one JSON object: the pages seen, the screenshots saved, whether the internet was reached.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-features=DnsOverHttps"]


def journey(out: Path, lang: str, width: int, height: int, user_agent: str | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {"lang": lang, "size": [width, height], "shots": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height}, user_agent=user_agent,
                                      locale="th-TH" if lang == "th" else "en-US", ignore_https_errors=False)
        page = context.new_page()

        def shot(name: str) -> None:
            path = out / f"{lang}-{width}x{height}-{name}.png"
            page.screenshot(path=str(path), full_page=True)
            seen["shots"].append(str(path))

        # Any web address lands on the portal first, as it would after joining the WiFi.
        page.goto("http://example.com/", wait_until="load")
        seen["landed"] = page.url
        if lang == "en" and page.locator("#lang-en").count():
            page.click("#lang-en")
            page.wait_for_load_state("load")
        seen["splash_title"] = page.title()
        seen["overflows"] = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        shot("1-splash")
        # The login button must not work before the terms are accepted (HTML `required`).
        page.click("#login-line")
        seen["blocked_without_consent"] = page.url == seen["landed"] or page.url.split("?")[0].endswith("/")
        page.check("#consent")
        page.check("#oa-messages")
        page.click("#login-line")
        page.wait_for_load_state("load")
        seen["line_page"] = page.url.split("?")[0]
        shot("2-line")
        box = page.locator("input[name=sandbox_add_friend]")
        if box.count():
            box.check()
        page.click("button[value=allow]")
        page.wait_for_selector("#online", timeout=20000)
        seen["welcome_url"] = page.url
        seen["welcome_text"] = page.inner_text("body")[:400]
        shot("3-online")
        page.goto("http://example.com/", wait_until="load")
        seen["internet"] = page.inner_text("body").strip()[:120]
        browser.close()
    return seen


if __name__ == "__main__":
    out, lang, width, height = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    json.dump(journey(out, lang, width, height, sys.argv[5] if len(sys.argv) > 5 else None), sys.stdout)
