"""QR codes as inline SVG, rendered on the server (segno: pure Python, no image library, no CDN).

An authenticator app scans the otpauth URI of a new TOTP key from the screen instead of the
owner typing 32 characters; the page stays self-contained (the CSP allows nothing else).
"""
from __future__ import annotations

import io

from markupsafe import Markup


def qr_svg(text: str, css_class: str, label: str | None = None, scale: int = 5) -> Markup:
    """`text` as an inline <svg> QR code (error correction M, 4-module quiet zone, `scale` pixels
    a module), with `label` as its accessible name. Markup, so a template puts it in as it is.
    Used for a new TOTP key and for a class's check-in code (scale 8: scanned across a room)."""
    import segno
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="svg", scale=scale, border=4, xmldecl=False, svgns=True,
                                     svgclass=css_class, title=label, light="#fff")
    return Markup(buf.getvalue().decode())
