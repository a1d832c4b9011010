"""`skillspot nft ...`: render, check and apply the firewall; list, add and remove devices."""
from __future__ import annotations

import click

from netcfg.ruleset import RulesetParams, render_ruleset


@click.group("nft")
def nft_group() -> None:
    """The nftables firewall."""


def _ruleset(ctx) -> str:
    cfg = ctx.config
    return render_ruleset(RulesetParams.from_config(cfg.network, cfg.portal))


@nft_group.command("render")
@click.pass_obj
def render(ctx) -> None:
    """Print the ruleset rendered from the configuration."""
    click.echo(_ruleset(ctx), nl=False)


@nft_group.command("apply")
@click.pass_obj
def apply(ctx) -> None:
    """Check and apply the ruleset atomically, keeping live sessions."""
    from netcfg.nft import NftError, apply_ruleset
    try:
        kept = apply_ruleset(_ruleset(ctx))
    except NftError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ruleset applied; {kept} timed element(s) carried over")


def _gate(ctx):
    from netcfg.gateclient import GateClient
    return GateClient(ctx.config.gate.socket, timeout=ctx.config.gate.timeout_seconds)


def _gate_call(fn):
    """Run a gate call; a gate that is down or says no is one line, not a traceback."""
    from netcfg.gate import GateError
    try:
        return fn()
    except GateError as exc:
        raise click.ClickException(str(exc)) from None


@nft_group.command("list")
@click.pass_obj
def list_clients(ctx) -> None:
    """Devices the gate lets through now."""
    for a in sorted(_gate_call(lambda: _gate(ctx).authorised()), key=lambda a: a.ip):
        click.echo(f"{a.mac}  {a.ip}  {a.expires}s left of {a.timeout}s")


@nft_group.command("authorise")
@click.argument("mac")
@click.argument("ip")
@click.argument("seconds", type=int)
@click.pass_obj
def authorise(ctx, mac: str, ip: str, seconds: int) -> None:
    """Let MAC at IP through for SECONDS, without a login (no ledger row: for tests and trials)."""
    _gate_call(lambda: _gate(ctx).authorise(mac, ip, seconds))


@nft_group.command("revoke")
@click.argument("mac")
@click.option("--reason", type=click.Choice(["admin_revoke", "logout"]), default="admin_revoke", show_default=True,
              help="admin_revoke: the device must log in with LINE again; logout: as if the visitor logged out "
                   "(a returning device is let in again on its next lease)")
@click.pass_obj
def revoke(ctx, mac: str, reason: str) -> None:
    """Shut MAC out now, ending its session with a logout row."""
    from base.addr import normalise_mac
    from ledger.db import open_ledger
    from sessions import build_sessions
    try:
        mac = normalise_mac(mac)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MAC") from None
    cfg = ctx.config
    sessions = build_sessions(cfg, open_ledger(cfg.ledger_path, cfg.box.id))
    addresses = _gate_call(lambda: sessions.end(mac, reason, admin=f"cli:{_user()}"))
    click.echo(" ".join(addresses) or "not authorised")


def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in the environment
        return "unknown"


@click.command("gate")
@click.option("--verbose", "-v", is_flag=True, help="log every sweep")
@click.pass_obj
def gate_command(ctx, verbose: bool) -> None:
    """Run the gate: the only process that changes the firewall's sets (needs CAP_NET_ADMIN).

    At start it applies the ruleset (keeping live sessions), rebuilds its index from the
    kernel, reconciles the ledger with the kernel, then serves [gate] socket and sweeps every
    [gate] sweep_seconds."""
    import logging
    import signal
    import sys
    import threading

    from ledger.db import LedgerError, open_ledger
    from netcfg.gate import GateError
    from netcfg.gated import GateServer, GateService
    from netcfg.neighbours import mac_for_ip
    from netcfg.nft import NftError, NftSets, apply_ruleset
    from sessions import build_sessions
    from sessions.sweeper import Sweeper

    cfg = ctx.config
    from base.config import ConfigError, refuse_placeholder_secrets
    try:
        refuse_placeholder_secrets(cfg, "gate")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        kept = apply_ruleset(_ruleset(ctx), only_if_changed=True)
        writer, reader = NftSets(), NftSets()  # the start's dump reads through a libnftables handle of its own
        service = GateService(writer, mac_for_ip)
        state = reader.dump()
        found = service.load(state)
        ledger = open_ledger(cfg.ledger_path, cfg.box.id)
        sweeper = Sweeper(build_sessions(cfg, ledger, gate=service), service, reader.active_keys,
                          idle_every=cfg.gate.sweep_seconds)
        report = sweeper.sweep(active=state.active)
        # The dnsmasq lease hook is a small client of the gate (provisioning/leasehook.py): the
        # lease is recorded here, where the ledger and the session layer are already loaded.
        from functools import partial

        from provisioning.leasehook import serve_lease
        server = GateServer(cfg.gate.socket, service, mode=int(cfg.gate.socket_mode, 8), group=cfg.gate.socket_group,
                            handlers={"lease": partial(serve_lease, cfg, service)})
    except (NftError, LedgerError, GateError, OSError) as exc:
        raise click.ClickException(f"the gate cannot start: {exc}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="gate-socket", daemon=True).start()
    applied = "unchanged, not re-applied" if kept is None else f"applied ({kept} element(s) kept)"
    click.echo(f"gate ready on {cfg.gate.socket}: ruleset {applied}, {found} device(s) "
               f"in the kernel, reconciled: closed {report.closed or 'none'}, removed {report.removed}", err=True)
    log = logging.getLogger("skillspot.gate")
    try:
        while not stop.wait(cfg.gate.sweep_seconds):
            try:
                sweeper.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep is retried next time; the gate keeps serving
                log.exception("sweep failed")
    finally:
        server.shutdown()
        server.server_close()
        cfg.gate.socket.unlink(missing_ok=True)
        ledger.close()
