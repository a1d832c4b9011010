"""Central admin pages: `init_admin(app, config, services)` wires them into the centre's Flask app."""
from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask

from central.admin import timefmt
from central.admin.context import EXTENSION, AdminContext
from central.admin.export import load_or_create_key
from central.admin.i18n import init_i18n
from central.admin.settings import AdminSettings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def load_or_create_secret(path: Path) -> bytes:
    """32 random bytes kept in `path`, made 0600 on first start and kept, so restarts keep what
    they signed (the admin sessions, the OA's check-in codes); safe when workers race."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        except FileExistsError:  # another worker made it first
            pass
    return path.read_bytes()


def _connector(services: Any):
    appdb = getattr(services, "appdb", None)
    if appdb is not None and callable(getattr(appdb, "connect", None)):
        return appdb.connect
    path = getattr(appdb, "path", None) or getattr(services, "appdb_path", None)
    if path is None:
        raise ValueError("the admin pages need services.appdb with connect() or a path")

    local = threading.local()

    def connect() -> sqlite3.Connection:  # one autocommit connection per thread, as AppDB does
        if getattr(local, "conn", None) is None:
            local.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            local.conn.execute("PRAGMA foreign_keys = ON")
        return local.conn
    return connect


def init_admin(app: Flask, config: Any, services: Any, clock=None) -> AdminContext:
    """Register the admin blueprint, its templates, translations and cookie settings on `app`.

    `config.admin` (AdminSettings) and `config.data_dir` are read when present; `services.store`
    answers searches and exports; `services.appdb` gives SQLite connections (migrations 1xx applied).
    """
    settings = getattr(config, "admin", None) or AdminSettings()
    data_dir = Path(config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    context = AdminContext(connect=_connector(services), store=services.store, settings=settings,
                           key=load_or_create_key(data_dir / "centre-export-key.pem"), data_dir=data_dir,
                           clock=clock or getattr(services, "now_ms", None) or (lambda: int(time.time() * 1000)),
                           services=services)
    app.extensions[EXTENSION] = context
    if not app.secret_key:
        app.secret_key = load_or_create_secret(data_dir / "admin-secret")
    # The session cookie: never sent over plain HTTP, never readable by scripts, never sent on a
    # request another site starts. __Host- makes the browser refuse it unless Secure, Path=/ and no Domain.
    app.config.update(SESSION_COOKIE_SECURE=settings.secure_cookies, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_NAME="__Host-centre" if settings.secure_cookies else "centre",
                      SESSION_COOKIE_PATH="/")
    from jinja2 import ChoiceLoader, FileSystemLoader
    app.jinja_loader = ChoiceLoader([loader for loader in (app.jinja_loader, FileSystemLoader(str(TEMPLATES))) if loader])
    if "babel" not in app.extensions:
        init_i18n(app, data_dir / "translations", settings.secure_cookies)
    app.jinja_env.filters["bkk"] = timefmt.bangkok
    app.jinja_env.filters["utc"] = timefmt.utc
    from central.admin.views import bp
    app.register_blueprint(bp)
    return context
