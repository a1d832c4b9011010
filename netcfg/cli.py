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


@nft_group.command("list")
def list_clients() -> None:
    """Devices the kernel lets through now."""
    from netcfg.gate import KernelGate
    for a in KernelGate().authorised():
        click.echo(f"{a.mac}  {a.ip}  {a.expires}s left of {a.timeout}s")


@nft_group.command("authorise")
@click.argument("mac")
@click.argument("ip")
@click.argument("seconds", type=int)
def authorise(mac: str, ip: str, seconds: int) -> None:
    """Let MAC at IP through for SECONDS."""
    from netcfg.gate import KernelGate
    from base.addr import normalise_mac
    KernelGate().authorise(normalise_mac(mac), ip, seconds)


@nft_group.command("revoke")
@click.argument("mac")
def revoke(mac: str) -> None:
    """Shut MAC out now."""
    from netcfg.gate import KernelGate
    from base.addr import normalise_mac
    click.echo(" ".join(KernelGate().revoke(normalise_mac(mac))) or "not authorised")
