"""`skillspot render` and `skillspot lease-event` (the dnsmasq hook)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click


@click.command("render")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="directory to write the rendered files into")
@click.pass_obj
def render_command(ctx, out: Path) -> None:
    """Render and syntax-check the box's daemon configuration files into OUT."""
    from netcfg.nft import NftError, check_ruleset
    from netcfg.ruleset import RulesetParams, render_ruleset
    from provisioning.dnsmasq import RenderError, captive_api_url, write_dnsmasq
    cfg = ctx.config
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = write_dnsmasq(cfg, Path(ctx.config_path).resolve(), out, captive_api_url(cfg))
        ruleset = render_ruleset(RulesetParams.from_config(cfg.network, cfg.portal))
        (out / "skillspot.nft").write_text(ruleset)
        check_ruleset(ruleset)
        written = [files.conf, files.lease_hook, out / "skillspot.nft"]
        # hostapd needs our RADIUS server; a box without [[radius.clients]] runs no hostapd of ours.
        if cfg.radius.clients:
            from provisioning.hostapd import render_hostapd_conf
            (out / "hostapd.conf").write_text(render_hostapd_conf(cfg.hostapd, cfg.radius))
            written.append(out / "hostapd.conf")
    except (RenderError, NftError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("wrote " + ", ".join(str(p) for p in written))


@click.command("lease-event", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@click.pass_obj
def lease_event_command(ctx, args: tuple[str, ...]) -> None:
    """Record one dnsmasq lease event (called by dnsmasq's dhcp-script)."""
    from ledger.db import LedgerError, open_ledger
    from ledger.records import log_event, record_lease
    from provisioning.leases import environment, lease_event_from_dnsmasq
    cfg = ctx.config
    try:
        event = lease_event_from_dnsmasq(list(args), environment(), int(time.time() * 1000))
    except ValueError as exc:
        raise click.ClickException(f"lease event ignored: {exc}") from None
    try:
        ledger = open_ledger(cfg.ledger_path, cfg.box.id)
        record_lease(ledger, event)
    except LedgerError as exc:
        # dnsmasq logs our stderr; the spool keeps the event so nothing is lost.
        spool = cfg.box.data_dir / "lease-spool.log"
        with open(spool, "a") as fh:
            fh.write(f"{int(time.time())} {' '.join(args)}\n")
        click.echo(f"ledger write failed, event spooled to {spool}: {exc}", err=True)
        sys.exit(1)
    if event.event in ("add", "old"):
        _readmit_returning(cfg, ledger, event.mac, event.ip)


def _readmit_returning(cfg, ledger, mac: str, ip: str) -> None:
    """A device with a recent LINE login is let in again without the portal. The lease is
    already recorded; a failure here only leaves the device at the portal, so it is reported
    and the hook still succeeds (dnsmasq must not see the lease event as failed)."""
    from sessions import build_sessions
    try:
        if build_sessions(cfg, ledger).readmit(mac, ip):
            click.echo(f"returning device {mac} at {ip} let in again", err=True)
    except Exception as exc:  # noqa: BLE001 - reported, never fatal for the lease record
        from ledger.records import log_event
        click.echo(f"returning device {mac}: not let in again: {type(exc).__name__}: {exc}", err=True)
        try:
            log_event(ledger, "returning_failed", mac, ip=ip, error=f"{type(exc).__name__}: {exc}"[:300])
        except Exception:  # noqa: BLE001
            pass
