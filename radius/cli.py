"""`skillspot radius`: run the RADIUS server; `skillspot radius disconnect MAC`: end a station."""
from __future__ import annotations

import logging
import signal
import sys

import click

from base.config import ConfigError, refuse_placeholder_secrets

from ledger.accounting import record_disconnect
from ledger.db import LedgerError, open_ledger
from radius.das import disconnect
from radius.server import RadiusServer


@click.group("radius", invoke_without_command=True)
@click.option("--verbose", "-v", is_flag=True, help="log every accounting request too")
@click.pass_context
def radius_command(click_ctx: click.Context, verbose: bool) -> None:
    """Run the RADIUS server hostapd uses (MAC authorisation on the auth port, accounting
    into the ledger). Subcommands act on stations instead."""
    if click_ctx.invoked_subcommand is not None:
        return
    cfg = click_ctx.obj.config
    try:
        refuse_placeholder_secrets(cfg, "radius")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not cfg.radius.clients:
        raise click.ClickException("[radius.clients] is empty: no NAS could talk to us. "
                                   "Fix: add a [[radius.clients]] table with hostapd's address and secret")
    try:
        ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    from sessions import build_sessions
    sessions = build_sessions(cfg, ledger)
    # The station left the access point: its session ends here (gate and logout row "radius_stop").
    server = RadiusServer(cfg.radius, ledger, idle_seconds=cfg.portal.idle_seconds,
                          on_stop=lambda mac, _pending: sessions.end(mac, "radius_stop"))
    try:
        server.bind()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {cfg.radius.listen_address} ports {cfg.radius.auth_port}/"
                                   f"{cfg.radius.acct_port}: {exc.strerror}. Fix: stop what uses them or "
                                   "change radius.auth_port/acct_port") from None
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    try:
        server.serve_forever()
    finally:
        ledger.close()


@radius_command.command("disconnect")
@click.argument("mac")
@click.option("--session", "acct_session_id", default=None, help="the Acct-Session-Id to name as well")
@click.pass_obj
def disconnect_command(ctx, mac: str, acct_session_id: str | None) -> None:
    """Send a Disconnect-Request for station MAC to hostapd and record the answer."""
    from base.addr import normalise_mac
    cfg = ctx.config
    try:
        mac = normalise_mac(mac)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MAC") from None
    result = disconnect(cfg.radius, mac, acct_session_id=acct_session_id, nas_identifier=cfg.hostapd.nas_identifier,
                        timeout=cfg.radius.das_timeout_seconds)
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    try:
        record_disconnect(ledger, mac, result)
    finally:
        ledger.close()
    click.echo(result.detail)
    if not result.acked:
        sys.exit(1)
