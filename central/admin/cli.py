"""`central admin ...`: make the first admin account (no default password exists), and check the
audit log's chain.

    central admin create NAME --role admin        # asks for the password twice, prints the TOTP key
    central admin audit-verify
    central admin export-key                      # the public key officials use to check exports

The centre's CLI registers `admin_group` (`main.add_command(admin_group)`); its ctx.obj is the path
of the centre's TOML, from which the app database and data_dir are found. --appdb / --data-dir name
them directly instead. Only the SQLite app database is opened (never chDB), so this works while the
service runs.
"""
from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import click

from central import accounts, audit


def _connect(ctx: click.Context) -> sqlite3.Connection:
    path = ctx.obj.get("appdb_path")
    if not path:
        raise click.UsageError("name the app database: --appdb PATH, or the centre's config with `central -c FILE`")
    from central.appdb import AppDB, AppDBError
    try:
        return AppDB(path).connect()  # creates and migrates it if the centre never ran yet
    except AppDBError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("admin")
@click.option("--appdb", type=click.Path(dir_okay=False), envvar="CENTRAL_APPDB", help="the centre's app SQLite file")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="CENTRAL_DATA_DIR", help="the centre's data dir")
@click.pass_context
def admin_group(ctx: click.Context, appdb: str | None, data_dir: str | None) -> None:
    """Central admin accounts and the audit log."""
    found: dict = {}
    if isinstance(ctx.obj, (str, Path)) and not (appdb and data_dir):
        from central.config import CentralConfigError, load
        try:
            cfg = load(ctx.obj)
        except CentralConfigError as exc:
            raise click.ClickException(str(exc)) from None
        found = {"appdb_path": cfg.appdb_path, "data_dir": cfg.data_dir}
    ctx.obj = {"appdb_path": appdb or found.get("appdb_path"), "data_dir": data_dir or found.get("data_dir")}


@admin_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(accounts.ROLES), default="admin", show_default=True)
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin")
@click.pass_context
def create(ctx: click.Context, name: str, role: str, password_stdin: bool) -> None:
    """Create an account and print its TOTP key (shown once: put it in the owner's authenticator)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    conn = _connect(ctx)
    try:
        new = accounts.create(conn, name, role, password, "cli", int(time.time() * 1000))
        audit.record(conn, int(time.time() * 1000), "cli", "admin", "account_create", {"name": name, "role": role},
                     ip="cli")
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"created {new.account.name} ({new.account.role})")
    click.echo(f"TOTP key: {new.totp_secret}")
    click.echo(f"otpauth URI: {new.totp_uri}")


@admin_group.command("audit-verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Recompute the audit log's hash chain; exit 1 naming every problem found."""
    conn = _connect(ctx)
    try:
        problems = audit.verify(conn)
        n = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    finally:
        conn.close()
    for p in problems:
        click.echo(p, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"audit log intact: {n} entries")


@admin_group.command("export-key")
@click.pass_context
def export_key(ctx: click.Context) -> None:
    """Print the centre's export public key (PEM) and its key id."""
    from central.admin.export import key_id, load_or_create_key, public_pem
    data_dir = ctx.obj.get("data_dir")
    if not data_dir:
        raise click.UsageError("name the data directory: --data-dir PATH")
    key = load_or_create_key(Path(data_dir) / "centre-export-key.pem")
    click.echo(public_pem(key), nl=False)
    click.echo(f"key id: {key_id(key.public_key())}")
