"""`central oa ...`: the OA's timer jobs (reminders, weekly jobs) for systemd timers or cron.

They need only the app database and LINE (not the chDB folder the service holds), so they run
beside the service. WiFi check-ins need the traffic store and run inside the service's worker.
"""
from __future__ import annotations

import json
import time

import click


def _oa(ctx: click.Context):
    from central.appdb import AppDB
    from central.cli import _config
    from central.oa import build_oa

    cfg = _config(ctx)
    appdb = AppDB(cfg.appdb_path)

    class _Svc:  # the slice of Services the OA uses, without the store
        store = None

        def __init__(self) -> None:
            self.appdb = appdb

        @staticmethod
        def now_ms() -> int:
            return int(time.time() * 1000)
    try:
        oa, _ = build_oa(cfg, _Svc())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return oa


@click.group("oa")
def oa_group() -> None:
    """The DSD Official Account's timer jobs."""


@oa_group.command("reminders")
@click.pass_context
def reminders(ctx: click.Context) -> None:
    """Queue and send reminders for sessions starting within 24 hours (each trainee once)."""
    oa = _oa(ctx)
    n = oa.send_reminders()
    sent = oa.flush_outbox()
    click.echo(json.dumps({"reminders": n, "outbox_attempts": sent}))


@oa_group.command("weekly-jobs")
@click.pass_context
def weekly_jobs(ctx: click.Context) -> None:
    """Push the best new vacancies to people who asked for job messages (capped per week)."""
    oa = _oa(ctx)
    n = oa.weekly_jobs()
    click.echo(json.dumps({"people": n, "outbox_attempts": oa.flush_outbox()}))


@oa_group.command("flush")
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Send what is due in the outbox now (retries keep their retry keys)."""
    click.echo(json.dumps({"outbox_attempts": _oa(ctx).flush_outbox()}))
