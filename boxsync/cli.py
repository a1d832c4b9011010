"""`skillspot sync` (the service) and `skillspot sync status`."""
from __future__ import annotations

import json
import signal
import sys

import click


def _settings(cfg):
    from boxsync.service import SyncSettings
    c = cfg.central
    return SyncSettings(url=c.url, data_dir=cfg.box.data_dir, office=cfg.box.office, enrol_code=c.enrol_code,
                        key_file=c.key_file, ca_file=c.ca_file, batch_rows=c.batch_rows, batch_seconds=c.batch_seconds,
                        heartbeat_seconds=c.heartbeat_seconds, backoff_max_seconds=c.backoff_max_seconds,
                        timeout_seconds=c.timeout_seconds)


def _ledger(cfg):
    from ledger.db import LedgerError, open_ledger
    try:
        return open_ledger(cfg.ledger_path, cfg.box.id)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("sync", invoke_without_command=True)
@click.pass_context
def sync_group(ctx: click.Context) -> None:
    """Send the ledger to the centre (long-running service); `status` shows progress."""
    if ctx.invoked_subcommand is not None:
        return
    from boxsync.service import SyncService
    cfg = ctx.obj.config
    if not cfg.central.url:
        raise click.ClickException("[central] url is empty: this box does not sync. Fix: set it to the centre's URL")
    ledger = _ledger(cfg)
    def health() -> dict:
        import shutil
        du = shutil.disk_usage(cfg.box.data_dir)
        return {"disk_percent": round(100 * du.used / du.total, 1), "disk_free_bytes": du.free}

    svc = SyncService(ledger, _settings(cfg), health=health)
    signal.signal(signal.SIGTERM, lambda *_: svc.stop.set())
    signal.signal(signal.SIGINT, lambda *_: svc.stop.set())
    click.echo(f"skillspot sync: box {cfg.box.id} -> {cfg.central.url}", err=True)
    svc.run(log=lambda m: click.echo(m, err=True))


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Lag and progress: batches formed, acknowledged, pending; rows not yet sent."""
    import boxsync
    cfg = ctx.obj.config
    st = boxsync.status(_ledger(cfg))
    st["centre"] = cfg.central.url
    if as_json:
        click.echo(json.dumps(st, indent=1, sort_keys=True))
        return
    click.echo(f"centre:            {cfg.central.url or '(none: sync off)'}")
    click.echo(f"batches formed:    {st['formed_seq']}  acknowledged: {st['last_acked_seq']}  "
               f"pending: {st['pending_batches']} ({st['pending_rows']} rows)")
    click.echo(f"rows not batched:  {st['unsent_rows']} {st['unsent_tables'] or ''}")
    click.echo(f"lag:               {st['lag_ms'] / 1000:.1f} s")
    click.echo(f"acknowledged seal: {st['acknowledged_seal']} (retention may delete only up to it)")
    sys.exit(0)


@sync_group.command("enrol")
@click.pass_context
def enrol_command(ctx: click.Context) -> None:
    """Enrol this box with the centre using [central] enrol_code, once (the installer runs it;
    the sync service would do it by itself). Prints `enrolled` or `already enrolled`; exits 1
    naming the cause when the centre refuses the code or cannot be reached."""
    from boxsync.client import CentreRefused, CentreUnavailable
    from boxsync.service import SyncError, enrol
    cfg = ctx.obj.config
    if not cfg.central.url:
        raise click.ClickException("[central] url is empty: there is no centre to enrol with. "
                                   "Fix: set it to the centre's URL")
    try:
        st, new = enrol(_settings(cfg), cfg.box.id)
    except CentreRefused as exc:
        raise click.ClickException(f"the centre at {cfg.central.url} refused the enrolment of {cfg.box.id}: "
                                   f"{exc.body.get('message') or exc.code} ({exc.code})") from None
    except CentreUnavailable as exc:
        raise click.ClickException(f"the centre cannot be reached: {exc}. Fix: check the box's WAN, DNS and "
                                   "[central] url") from None
    except (SyncError, OSError) as exc:
        raise click.ClickException(f"enrolment failed: {exc}") from None
    click.echo(f"{'enrolled' if new else 'already enrolled'}: box {st['box_id']} at {st['url']} "
               f"(box key {st['key_id']})")
