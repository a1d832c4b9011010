"""A new admin account's TOTP key is shown as text and as a QR code: an inline SVG rendered by
the centre (segno), no script, no image from elsewhere. Chromium draws the page, and zbar
(`zbarimg`, the decoder behind many scanner apps) reads the otpauth URI back from the
screenshot, as an authenticator app would from the screen."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from test_central_admin_browser import ARTIFACTS, browser, login, served  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def test_new_totp_key_is_shown_as_a_qr_code_an_app_can_scan(served, browser, tmp_path):  # noqa: F811
    if shutil.which("zbarimg") is None:
        pytest.fail("zbarimg is not installed (apt-get install zbar-tools)")
    centre = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1000, "height": 900}, locale="th-TH")
    page = ctx.new_page()
    login(page, centre, "root")
    page.click("#nav-accounts")
    page.fill("#new-name", "qr-viewer")
    page.select_option("#new-role", "viewer")
    page.fill("#new-password", "a long enough password")
    page.click("#create-account")
    page.wait_for_selector("#new-secret")
    secret = page.inner_text("#totp-secret").strip()
    svg = page.inner_html("#totp-qr")
    assert svg.lstrip().startswith("<svg") and "<title>" in svg and "qr-viewer" in svg
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", svg), "the QR code must not load anything"
    page.locator("#new-secret").screenshot(path=str(ARTIFACTS / "central-admin-totp-qr.png"))
    shot = tmp_path / "qr.png"
    page.locator("#totp-qr svg").screenshot(path=str(shot))
    ctx.close()

    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(shot)], capture_output=True, text=True, timeout=30)
    assert decoded.returncode == 0, decoded.stderr
    uri = decoded.stdout.strip()
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp", uri
    assert unquote(parts.path).endswith(":qr-viewer"), uri
    assert parse_qs(parts.query)["secret"] == [secret], (uri, secret)
    totp = pyotp.parse_uri(uri)  # what an authenticator app makes of it
    assert isinstance(totp, pyotp.TOTP) and totp.digits == 6 and totp.interval == 30
