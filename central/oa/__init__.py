"""The DSD Official Account at the centre: webhook, conversations, training, attendance, skill
tests, jobs, news, consent, labour-market charts. `init_oa(app, config, services)` wires it in."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from central.admin import load_or_create_secret
from central.oa.line import LineClient
from central.oa.service import Oa
from central.oa.worker import Worker

EXTENSION = "skillspot_oa"


@dataclass
class OaExt:
    oa: Oa
    channel_secret: str
    worker: Worker


def build_oa(config: Any, services: Any) -> tuple[Oa, str]:
    """The Oa service and the channel secret, from [oa] and the environment it names."""
    s = config.oa
    secret, token = os.environ.get(s.channel_secret_env, ""), os.environ.get(s.access_token_env, "")
    if not secret or not token:
        raise ValueError(f"[oa] enabled = true needs the channel secret in ${s.channel_secret_env} and the access "
                         f"token in ${s.access_token_env}. Fix: set both in the service's environment")
    oa = Oa(connect=services.appdb.connect, clock_ms=services.now_ms,
            line=LineClient(token, s.api_base_url, s.http_timeout_s),
            checkin_secret=load_or_create_secret(Path(config.data_dir) / "oa-checkin-secret"), store=services.store,
            jobs_per_week=s.jobs_per_week, checkin_early_min=s.checkin_early_min, oa_basic_id=s.oa_basic_id)
    return oa, secret


def init_oa(app: Flask, config: Any, services: Any, start_worker: bool = True) -> OaExt | None:
    """Register the webhook and the OA admin pages; start the worker. Nothing when [oa] is off."""
    settings = getattr(config, "oa", None)
    if settings is None or not settings.enabled:
        return None
    oa, secret = build_oa(config, services)
    worker = Worker(oa, config.oa.worker_poll_s, config.oa.wifi_checkin_every_s)
    ext = OaExt(oa, secret, worker)
    app.extensions[EXTENSION] = ext
    from central.oa.webhook import create_blueprint
    app.register_blueprint(create_blueprint())
    if "cadmin" in app.blueprints:
        from central.oa.admin import create_admin_blueprint
        app.register_blueprint(create_admin_blueprint())
    if start_worker:
        worker.start()
    return ext
