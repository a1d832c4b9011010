"""The centre's Flask application factory.

One gunicorn process with threads (gthread) serves it: embedded chDB allows one process per
data folder, and the services below (store, app database, clock, key) are made once per
process and passed in; no module globals hold state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, jsonify

from syncapi.signing import load_or_create_key  # noqa: F401 (the centre's keys; re-exported)
from central.appdb import AppDB
from central.config import CentralConfig
from central.store import Store, open_store


@dataclass
class Services:
    """What the app uses, made by `build_services` (tests pass their own clock)."""

    store: Store
    appdb: AppDB
    clock: Callable[[], float] = field(default=time.time)
    key: Ed25519PrivateKey | None = None

    def now_ms(self) -> int:
        """The centre's clock in Unix milliseconds."""
        return int(self.clock() * 1000)


@dataclass
class _Ext:
    config: CentralConfig
    services: Services


def build_services(config: CentralConfig, clock: Callable[[], float] = time.time) -> Services:
    """Open the app database, the store (chDB or server) and the key."""
    appdb = AppDB(config.appdb_path)
    store = open_store(config.store.url, config.chdb_path, config.store.database, config.store.username,
                       config.store.password_env)
    svc = Services(store=store, appdb=appdb, clock=clock, key=load_or_create_key(config.key_path))
    if config.push.terms_version is not None or config.push.blocklist_file:
        import json
        blocklist = json.loads(Path(config.push.blocklist_file).read_text(encoding="utf-8")) \
            if config.push.blocklist_file else []
        appdb.set_push_config(config.push.terms_version, blocklist, svc.now_ms())
    return svc


def create_app(config: CentralConfig, services: Services) -> Flask:
    """The centre's app: box API under /api/v1, admin pages under /admin, /healthz."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = (config.api.max_batch_mb << 20) + 65536
    if services.key is None:
        services.key = load_or_create_key(config.key_path)
    app.extensions["skillspot_central"] = _Ext(config, services)
    if config.server.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.server.trusted_proxies)  # type: ignore[method-assign]

    def office_of(box_id: str) -> str:
        b = services.appdb.box(box_id)
        return (b or {}).get("office") or ""
    services.store.office_of = office_of

    from central.api import create_blueprint
    app.register_blueprint(create_blueprint())

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True, "store": services.store.backend.name, "time_ms": services.now_ms()})

    @app.post("/internal/retention")
    def internal_retention() -> Any:
        # `central retention` on a timer asks the running service (it holds the chDB folder).
        from flask import abort, request
        from central import retention
        from central.cli import internal_token
        if request.remote_addr not in ("127.0.0.1", "::1") or \
                request.headers.get("X-Central-Internal", "") != internal_token(config):
            abort(403)
        dry = bool((request.get_json(silent=True) or {}).get("dry_run"))
        return jsonify(retention.run(services.store, services.appdb, services.now_ms(), config.retention.days, dry))

    @app.get("/internal/rowkeys/<box_id>")
    def internal_rowkeys(box_id: str) -> Any:
        # Reconciliation (ops and the end-to-end tests): every row key the store holds for a box,
        # per table, with duplicates visible (a list, not a set). Loopback + token only.
        from flask import abort, request
        from central.cli import internal_token
        if request.remote_addr not in ("127.0.0.1", "::1") or \
                request.headers.get("X-Central-Internal", "") != internal_token(config):
            abort(403)
        return jsonify(services.store.row_keys(box_id))

    # ---- admin pages (central/admin/, owned by the admin side) ---------------------------
    # ADMIN-BLUEPRINTS-HERE: the admin helper registers its blueprints on the next line.
    _init_admin(app, config, services)
    from central.oa import init_oa; init_oa(app, config, services)  # noqa: E702 (OA: webhook, admin pages, worker)
    # ---- end of admin pages ----------------------------------------------------------------
    return app


def _init_admin(app: Flask, config: CentralConfig, services: Services) -> None:
    try:
        from central.admin import init_admin
    except ImportError as exc:
        if "central.admin" not in str(exc) and "init_admin" not in str(exc):
            raise
        return
    init_admin(app, config, services)
