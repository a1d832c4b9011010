"""The `skillspot` command. Each package contributes its own subcommands; this module only
loads the configuration and turns errors into readable messages at the boundary."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from base.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "/etc/skillspot/skillspot.toml"

# (module, attribute) of click commands owned by other packages, loaded lazily so that
# `skillspot config check` works even where a heavy dependency is broken.
PACKAGE_COMMANDS = [
    ("ledger.cli", "ledger_group"),
    ("netcfg.cli", "nft_group"),
    ("netcfg.cli", "gate_command"),
    ("portal.cli", "portal_command"),
    ("lineapi.cli", "line_sandbox_command"),
    ("provisioning.cli", "render_command"),
    ("provisioning.cli", "lease_event_command"),
    ("simoffice.demo", "demo_command"),
    ("radius.cli", "radius_command"),
    ("health.cli", "health_command"),
]


class Context:
    """What every subcommand gets: the config path, loaded on first use."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def _register() -> None:
    for module_name, attr in PACKAGE_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that package has no commands yet
            raise
        main.add_command(getattr(module, attr))


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
