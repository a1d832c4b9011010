"""The captive portal: a Flask application factory; speaks HTTP only.

Everything with a side effect (firewall, ledger, LINE) arrives in a PortalServices object,
so the app holds no global state and a test can run it against real or in-memory parts.
"""
from __future__ import annotations

from flask import Flask

from portal.services import PortalServices
from skillspot.config import Config


def create_app(config: Config, services: PortalServices) -> Flask:
    """Build the portal for one box configuration and one set of services."""
    from portal import captive, login

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.portal.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SKILLSPOT=config,
    )
    app.extensions["skillspot"] = services
    app.register_blueprint(captive.bp)
    app.register_blueprint(login.bp)
    return app


def build_services(config: Config) -> PortalServices:
    """The production services for `config`: the kernel gate, the ledger, LINE per config."""
    from ledger.db import open_ledger
    from lineapi.client import LineLogin
    from netcfg.gate import KernelGate
    from portal.attempts import AttemptStore

    return PortalServices(
        gate=KernelGate(),
        ledger=open_ledger(config.ledger_path, config.box.id),
        line=LineLogin(config.line),
        attempts=AttemptStore(config.box.data_dir / "portal-attempts.sqlite"),
    )
