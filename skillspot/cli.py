"""The `skillspot` command. Each package contributes its own subcommands; this module only
loads the configuration and turns errors into readable messages at the boundary."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the config model (pydantic) is imported only by commands that read it
    from base.config import Config

DEFAULT_CONFIG = "/etc/skillspot/skillspot.toml"

# name -> (module, attribute, one-line help) of click commands owned by other packages. A
# command's module is imported only when that command runs (or its own --help is asked for):
# `skillspot --help` and the lease hook do not pay for Flask, gunicorn, libnftables or LINE's
# SDK, and `skillspot config check` works even where a heavy dependency is broken. The help
# line is kept here so the top-level --help lists every command without importing any.
PACKAGE_COMMANDS = {
    "ledger": ("ledger.cli", "ledger_group", "Read, verify and export the traffic-data ledger."),
    "nft": ("netcfg.cli", "nft_group", "The nftables firewall."),
    "gate": ("netcfg.cli", "gate_command",
             "Run the gate: the only process that changes the firewall's sets (needs CAP_NET_ADMIN)."),
    "portal": ("portal.cli", "portal_command", "Run the captive portal under gunicorn."),
    "line-sandbox": ("lineapi.cli", "line_sandbox_command",
                     "Serve a local stand-in for LINE Login and the Messaging API (tests and demos only)."),
    "render": ("provisioning.cli", "render_command",
               "Render and syntax-check the box's daemon configuration files into OUT."),
    "lease-event": ("provisioning.cli", "lease_event_command",
                    "Record one dnsmasq lease event (called by dnsmasq's dhcp-script)."),
    "demo": ("simoffice.demo", "demo_command",
             "Build a simulated office in network namespaces and walk a phone through it."),
    "radius": ("radius.cli", "radius_command", "Run the RADIUS server hostapd uses."),
    "sync": ("boxsync.cli", "sync_group", "Send the ledger to the centre (long-running service); `status` shows progress."),
    "health": ("health.cli", "health_command", "Check the box and print a checklist; exit 1 if any check fails."),
}


class LazyGroup(click.Group):
    """A click group whose package commands are imported on first use (see PACKAGE_COMMANDS)."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str, str]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module_name, attr, _help = self.lazy[cmd_name]
            from base.lean import as_on_a_box
            as_on_a_box()  # before the command's imports: every command runs as on a box (no pandas & co.)
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and module_name.startswith(exc.name):
                    return None  # that package has no commands (yet) in this install
                raise
            self.add_command(getattr(module, attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list for --help, from the help lines kept here: nothing is imported."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, self.lazy[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Context:
    """What every subcommand gets: the config path, loaded on first use."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from base.config import ConfigError, load_config
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config


pass_context = click.make_pass_decorator(Context)


@click.group(cls=LazyGroup, lazy=PACKAGE_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", envvar="SKILLSPOT_CONFIG", default=DEFAULT_CONFIG,
              show_default=True, help="the TOML configuration file (or SKILLSPOT_CONFIG)")
@click.pass_context
def main(ctx: click.Context, config_path: str) -> None:
    """Skillspot: free-WiFi onboarding for DSD labour offices."""
    ctx.obj = Context(config_path)


@main.group("config")
def config_group() -> None:
    """Check the configuration file."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print every problem with its key and fix, exit 1 if any."""
    from base.config import ConfigError, load_config
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    from base.config import secret_problems
    for problem in secret_problems(cfg):
        # Warnings, not errors: the file is valid, but `skillspot portal`/`radius`/`gate`
        # refuse to start while a placeholder is left in it.
        click.echo(f"{file}: warning: {problem.message}", err=True)
    click.echo(f"{file}: OK (box {cfg.box.id}, LAN {cfg.network.lan_interface} {cfg.network.lan_address}, "
               f"LINE {cfg.line.login_base_url})")


@main.group("admin")
def admin_group() -> None:
    """Box admin accounts (the /admin page)."""


@admin_group.command("hash-password")
@click.password_option("--password", prompt="New admin password", help="read from the terminal if not given")
def hash_password(password: str) -> None:
    """Print a password hash for [admin] users in the configuration."""
    from werkzeug.security import generate_password_hash
    if len(password) < 10:
        raise click.ClickException("use at least 10 characters: this page can shut visitors out and shows who they are")
    click.echo(generate_password_hash(password, method="scrypt"))


if __name__ == "__main__":  # pragma: no cover
    main()
