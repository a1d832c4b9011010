"""`skillspot ledger ...`: reading the ledger from the command line."""
from __future__ import annotations

import datetime as dt

import click

from ledger.db import open_ledger
from ledger.records import rows


def format_ms(ms: int | None) -> str:
    """Unix milliseconds as an ISO-8601 UTC string (empty for None)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def print_rows(ledger, table: str, limit: int) -> None:
    """Print a table's newest rows with readable times."""
    click.echo(f"-- {table}")
    for row in rows(ledger, table, limit):
        shown = {k: (format_ms(v) if k.endswith("_ms") else v) for k, v in row.items()}
        click.echo("  " + "  ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, "")))


@click.group("ledger")
def ledger_group() -> None:
    """Read, verify and export the traffic-data ledger."""


@ledger_group.command("show")
@click.option("--table", type=click.Choice(["leases", "logins", "logouts", "events", "all"]), default="all")
@click.option("--limit", default=20, show_default=True)
@click.pass_obj
def show(ctx, table: str, limit: int) -> None:
    """Print the newest rows of the core tables."""
    cfg = ctx.config
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    for t in (["leases", "logins", "logouts", "events"] if table == "all" else [table]):
        print_rows(ledger, t, limit)
