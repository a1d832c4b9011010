"""Render the rich menu image (central/static/oa/richmenu.jpg, 2500x843, under LINE's 1 MB)
from richmenu.html with the system's Chromium and Thai fonts (fonts-thai-tlwg). Run by hand
after changing the menu:  python -m central.oa.assets.make_richmenu"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "static" / "oa" / "richmenu.jpg"


def main() -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 2500, "height": 843})
        page.goto((HERE / "richmenu.html").as_uri())
        page.screenshot(path=str(OUT), type="jpeg", quality=80)
        browser.close()
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
