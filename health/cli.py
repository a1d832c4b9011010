"""`skillspot health`."""
from __future__ import annotations

import sys

import click


@click.command("health")
@click.pass_context
def health_command(ctx: click.Context) -> None:
    """Check the box and print a checklist; exit 1 if any check fails.

    Access point or LAN, DHCP, firewall, gate, portal, RADIUS, flow logger, clock, centre, disk
    and ledger."""
    from health.checks import checklist, run_checks
    app = ctx.obj
    root = ctx.find_root()
    commands = set(root.command.list_commands(root))  # without importing them
    text, ok = checklist(run_checks(app.config, app.config_path, commands))
    click.echo(text)
    sys.exit(0 if ok else 1)
