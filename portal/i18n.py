"""Thai (default) and English pages with Flask-Babel.

The catalogues are kept as .po text in portal/translations and compiled to .mo when the app
is built (`compile_catalogs`), into the box's data directory: nothing binary is committed and
nothing needs a build step. The language is chosen by `?lang=` (remembered in a cookie for a
year), then that cookie, then Thai. The browser's Accept-Language is ignored on purpose: the
service is Thai, and a visitor switches with one tap on every page.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from flask_babel import Babel

LANGUAGES = ("th", "en")
DEFAULT_LANGUAGE = "th"
COOKIE = "lang"
SOURCE_DIR = Path(__file__).resolve().parent / "translations"


def compile_catalogs(out_dir: Path, source_dir: Path = SOURCE_DIR) -> Path:
    """Compile every <lang>/LC_MESSAGES/messages.po under `source_dir` into `out_dir`.

    A .mo is rewritten only when its .po is newer; each write is atomic (temporary file and
    rename), so several gunicorn workers starting together never read half a file.
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


def _remember_language(resp: Response) -> Response:
    if g.get("lang_changed"):
        resp.set_cookie(COOKIE, g.lang, max_age=365 * 86400, samesite="Lax", httponly=True)
    return resp


def ui_locales(lang: str) -> str:
    """LINE's ui_locales for a page language: that language first, the other as fallback."""
    return " ".join([lang, *[l for l in LANGUAGES if l != lang]])


def init_i18n(app: Flask, compiled_dir: Path) -> None:
    """Compile the catalogues into `compiled_dir` and wire Flask-Babel and the language cookie."""
    compile_catalogs(compiled_dir)
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LANGUAGE
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compiled_dir)
    Babel(app, locale_selector=current_language)
    app.after_request(_remember_language)

    @app.context_processor
    def _language() -> dict:
        return {"lang": current_language(), "languages": LANGUAGES, "lang_url": lang_url}


def lang_url(lang: str) -> str:
    """This page in another language: the same path and query, with lang= replaced."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return request.path + "?" + urlencode([*args, ("lang", lang)])
