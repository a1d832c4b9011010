"""The whole visitor journey in headless Chromium (Debian's, driven by Playwright) inside the
simulated office, with screenshots kept as test artefacts in artifacts/screenshots/."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from simoffice.office import PORTAL_HOST, Office

pytestmark = [pytest.mark.netns, pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
JOURNEY = Path(__file__).resolve().parent / "browser" / "journey.py"
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 13; CPH2477) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0.0.0 Mobile Safari/537.36")


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium fonts-thai-tlwg)")
    with Office(workdir=tmp_path_factory.mktemp("browser-office")) as o:
        o.lease = o.phone_dhcp()
        yield o


def run_journey(office: Office, lang: str, width: int, height: int, ua: str | None = None) -> dict:
    argv = [sys.executable, str(JOURNEY), str(ARTIFACTS), lang, str(width), str(height)] + ([ua] if ua else [])
    proc = office.run_in(office.phone_ns, argv, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("lang,width,height,ua", [("th", 360, 740, ANDROID_CHROME), ("en", 1280, 800, None)])
def test_visitor_gets_online_in_a_real_browser(office, lang, width, height, ua):
    office.box("nft", "revoke", office.lease["mac"])  # each journey starts held at the portal
    seen = run_journey(office, lang, width, height, ua)
    assert seen["landed"].startswith(f"http://{PORTAL_HOST}:8080/"), seen
    assert seen["line_page"] == "http://access.line.me/oauth2/v2.1/authorize", seen
    assert "Hello from the internet" in seen["internet"], seen
    assert not seen["overflows"], "the page is wider than the screen"
    for shot in seen["shots"]:
        assert Path(shot).stat().st_size > 5000, shot
