"""The `central` command: serve, retention, enrol-code."""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import click

from central.config import CentralConfig, CentralConfigError, load

DEFAULT_CONFIG = "/etc/skillspot/central.toml"
TOKEN_FILE = "internal-token"


def _config(ctx: click.Context) -> CentralConfig:
    try:
        return load(ctx.obj)
    except CentralConfigError as exc:
        raise click.ClickException(str(exc)) from None


def internal_token(cfg: CentralConfig) -> str:
    """A secret (file mode 0600 in data_dir) that lets local commands ask the running service."""
    path = cfg.data_dir / TOKEN_FILE
    if not path.exists():
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", envvar="SKILLSPOT_CENTRAL_CONFIG", default=DEFAULT_CONFIG,
              show_default=True, help="the centre's TOML file (or SKILLSPOT_CENTRAL_CONFIG)")
@click.pass_context
def main(ctx: click.Context, config_path: str) -> None:
    """The DSD centre: box sync API, traffic-log store, admin pages."""
    ctx.obj = config_path


@main.command("serve")
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the centre under gunicorn: ONE worker process with threads (chDB: one process per data folder)."""
    from gunicorn.app.base import BaseApplication

    from central.app import build_services, create_app
    cfg = _config(ctx)
    internal_token(cfg)

    class _App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", [cfg.server.bind])
            self.cfg.set("workers", 1)            # never more: the chDB folder takes one process
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", cfg.server.threads)
            self.cfg.set("timeout", cfg.server.timeout_s)
            self.cfg.set("accesslog", "-")

        def load(self):
            # Opened in the worker (after fork), so the chDB session lives in the serving process.
            return create_app(cfg, build_services(cfg))

    _App().run()


@main.command("retention")
@click.option("--dry-run", is_flag=True, help="say what would be dropped, drop nothing")
@click.pass_context
def retention(ctx: click.Context, dry_run: bool) -> None:
    """Drop whole day partitions past retention (90 days after session end; cases and holds keep theirs)."""
    from central.app import build_services
    from central.store import StoreError
    cfg = _config(ctx)
    try:
        svc = build_services(cfg)
    except StoreError as exc:
        if "lock" not in str(exc).lower() and "one process" not in str(exc):
            raise click.ClickException(str(exc)) from None
        # The running service holds the chDB folder: ask it (loopback, token from data_dir).
        import requests
        host, port = cfg.server.bind.rsplit(":", 1)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        r = requests.post(f"http://{host}:{port}/internal/retention", json={"dry_run": dry_run},
                          headers={"X-Central-Internal": internal_token(cfg)}, timeout=600)
        if r.status_code != 200:
            raise click.ClickException(f"the running service refused retention: {r.status_code} {r.text[:200]}")
        click.echo(json.dumps(r.json(), indent=1, sort_keys=True))
        return
    from central import retention as ret
    res = ret.run(svc.store, svc.appdb, svc.now_ms(), cfg.retention.days, dry_run)
    svc.store.close()
    click.echo(json.dumps(res, indent=1, sort_keys=True))


@main.command("enrol-code")
@click.option("--by", "by", required=True, help="the central admin making the code (recorded)")
@click.option("--box", "box_id", default=None, help="only this box id may use it (needed to replace a box's key)")
@click.option("--hours", type=click.IntRange(1, 720), default=None, help="validity (default [api] enrol_code_hours)")
@click.pass_context
def enrol_code(ctx: click.Context, by: str, box_id: str | None, hours: int | None) -> None:
    """Make a one-time enrolment code for a box (printed once; only its hash is kept)."""
    from central.appdb import AppDB
    cfg = _config(ctx)
    db = AppDB(cfg.appdb_path)
    hours = hours or cfg.api.enrol_code_hours
    code = db.new_enrol_code(by, int(time.time() * 1000), hours * 3600_000, box_id)
    click.echo(code)
    click.echo(f"valid {hours} h{' for box ' + box_id if box_id else ''}; put it in the box's [central] enrol_code",
               err=True)


from central.oa.cli import oa_group; main.add_command(oa_group)  # noqa: E402,E702 (the OA's timer jobs)
# Accounts and the audit log; opens only the SQLite app DB, so it works while `serve` holds chDB.
from central.admin.cli import admin_group; main.add_command(admin_group)  # noqa: E402,E702

if __name__ == "__main__":  # pragma: no cover
    main()
