"""The captive portal: a Flask application factory.

Everything with a side effect (firewall, ledger, LINE) arrives in a PortalServices object,
so the app holds no global state and a test can run it against real or in-memory parts.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from netcfg.gate import GateError
from portal.services import PortalServices
from portal.urls import captive_api_url
from base.config import Config

__all__ = ["create_app", "build_services", "captive_api_url", "terms_templates"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
log = logging.getLogger(__name__)


def terms_templates(version: str) -> dict[str, str]:
    """The notice templates of one terms version, per language; ValueError if one is missing.

    The legal text is versioned as whole documents (templates/terms/VERSION.LANG.html) so
    the version recorded with a login names exactly the words the visitor saw."""
    from portal.i18n import LANGUAGES
    found = {}
    for lang in LANGUAGES:
        name = f"terms/{version}.{lang}.html"
        if not (TEMPLATES / name).is_file():
            raise ValueError(f"portal.terms_version = {version!r} but {TEMPLATES / name} does not exist; "
                             f"fix: write that notice or set terms_version to one of "
                             f"{sorted({p.name.split('.')[0] for p in (TEMPLATES / 'terms').glob('*.html')})}")
        found[lang] = name
    return found


def create_app(config: Config, services: PortalServices) -> Flask:
    """Build the portal for one box configuration and one set of services."""
    from portal import admin, api, captive, login
    from portal.i18n import init_i18n

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.portal.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SKILLSPOT=config,
        TERMS_TEMPLATES=terms_templates(config.portal.terms_version),
    )
    app.extensions["skillspot"] = services
    # Rendered splash pages by (language, path and query, browser kind, online): 256 of them
    # cover every real variant; the bound keeps odd query strings from growing it.
    app.extensions["skillspot.splash"] = functools.lru_cache(maxsize=256)(login.render_splash)
    init_i18n(app, config.box.data_dir / "portal-translations")
    app.register_blueprint(api.bp)
    app.register_blueprint(login.bp)
    app.register_blueprint(admin.bp)
    _error_pages(app)
    app.wsgi_app = captive.Interceptor(app.wsgi_app, config, services.gate)  # type: ignore[method-assign]
    return app


def _error_pages(app: Flask) -> None:
    """Every error is a friendly page in the visitor's language; never a stack trace."""
    from flask_babel import gettext as _

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 404:
            title, message = _("Page not found"), _("This page does not exist on the WiFi portal.")
        elif exc.code == 403:
            title, message = _("Not allowed"), _("This page is not available from here.")
        else:
            title, message = _("Something went wrong"), _("Please go back to the start and try again.")
        return render_template("error.html", reason=f"http_{exc.code}", title=title, message=message,
                               retry_url="/", lang_base="/"), exc.code

    @app.errorhandler(GateError)
    def _gate_down(exc: GateError):
        # Nothing was half-done: a login whose gate call failed is closed in the ledger.
        log.warning("gate: %s", exc)
        return render_template("error.html", reason="gate_unavailable", title=_("Just a moment"),
                               message=_("The WiFi is getting ready. Please try again in a moment."),
                               retry_url="/", lang_base="/"), 503

    @app.errorhandler(Exception)
    def _crash(exc: Exception):
        log.exception("unhandled error in the portal")
        return render_template("error.html", reason="internal", title=_("Something went wrong"),
                               message=_("Please go back to the start and try again."),
                               retry_url="/", lang_base="/"), 500


def build_services(config: Config) -> PortalServices:
    """The production services for `config`: the gate over its socket (the portal itself
    changes no firewall state and needs no privilege), the ledger, LINE per config, and the
    session layer."""
    from ledger.db import open_ledger
    from lineapi.client import LineLogin
    from portal.attempts import AttemptStore
    from sessions import build_sessions

    ledger = open_ledger(config.ledger_path, config.box.id)
    sessions = build_sessions(config, ledger)
    return PortalServices(
        gate=sessions.gate,
        ledger=ledger,
        line=LineLogin(config.line),
        attempts=AttemptStore(config.box.data_dir / "portal-attempts.sqlite"),
        sessions=sessions,
    )
