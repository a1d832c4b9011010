"""Thai (default) and English admin pages with Flask-Babel, as the box's portal does it.

Catalogues are .po text in central/translations, compiled to .mo at start into the data
directory (nothing binary committed). The language comes from ?lang= (kept in a cookie), then the
cookie, then Thai. (A copy of the portal's approach: central never imports box packages.)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, Response, g, request
from flask_babel import Babel

LANGUAGES = ("th", "en")
DEFAULT_LANGUAGE = "th"
COOKIE = "centre_lang"
SOURCE_DIR = Path(__file__).resolve().parent.parent / "translations"


def compile_catalogs(out_dir: Path, source_dir: Path = SOURCE_DIR) -> Path:
    """Compile every <lang>/LC_MESSAGES/messages.po into `out_dir` (atomic writes; only when newer).

    Raises ValueError naming the file when a catalogue cannot be parsed.
    """
    for po in sorted(source_dir.glob("*/LC_MESSAGES/messages.po")):
        lang = po.parent.parent.name
        mo = out_dir / lang / "LC_MESSAGES" / "messages.mo"
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        mo.parent.mkdir(parents=True, exist_ok=True)
        try:
            with po.open("rb") as fh:
                catalog = read_po(fh, locale=lang)
        except Exception as exc:  # babel raises several parse error types
            raise ValueError(f"{po}: cannot read the translation catalogue: {exc}") from exc
        fd, tmp = tempfile.mkstemp(dir=mo.parent, prefix=".messages-", suffix=".mo")
        try:
            with os.fdopen(fd, "wb") as fh:
                write_mo(fh, catalog)
            os.replace(tmp, mo)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out_dir


def current_language() -> str:
    """The page language for this request: ?lang=, then the cookie, then Thai."""
    if "lang" not in g:
        asked = request.args.get("lang", "")
        if asked in LANGUAGES:
            g.lang, g.lang_changed = asked, asked != request.cookies.get(COOKIE)
        else:
            cookie = request.cookies.get(COOKIE, "")
            g.lang, g.lang_changed = (cookie if cookie in LANGUAGES else DEFAULT_LANGUAGE), False
    return g.lang


def lang_url(lang: str) -> str:
    """This page in another language (GET pages; a POST result page links to its form)."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return request.path + "?" + urlencode([*args, ("lang", lang)])


def init_i18n(app: Flask, compiled_dir: Path, secure: bool) -> None:
    """Compile the catalogues and wire Flask-Babel and the language cookie."""
    compile_catalogs(compiled_dir)
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LANGUAGE
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compiled_dir)
    Babel(app, locale_selector=current_language)

    @app.after_request
    def _remember_language(resp: Response) -> Response:
        if g.get("lang_changed"):
            resp.set_cookie(COOKIE, g.lang, max_age=365 * 86400, samesite="Strict", httponly=True, secure=secure)
        return resp

    @app.context_processor
    def _language() -> dict:
        return {"lang": current_language(), "languages": LANGUAGES, "lang_url": lang_url}
