"""`skillspot` loads a package's commands only when one of them runs: --help and the lease
hook must not pay for Flask, gunicorn, libnftables, pydantic or LINE's SDK."""
from __future__ import annotations

import importlib
import subprocess
import sys

import click
from click.testing import CliRunner

from skillspot.cli import PACKAGE_COMMANDS, main

HEAVY = ("flask", "gunicorn", "nftables", "pydantic", "pyroute2", "linebot", "scapy", "jinja2", "werkzeug")


def test_top_level_help_imports_no_package_and_lists_every_command():
    code = ("import sys\nfrom skillspot.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
            "print('OURS', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('portal', 'netcfg', 'ledger', 'radius', 'lineapi', 'provisioning', 'simoffice', 'base')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout and "OURS []" in proc.stdout, proc.stdout[-600:]
    for name in PACKAGE_COMMANDS:
        assert f"\n  {name} " in proc.stdout, name


def test_each_registered_command_exists_and_its_help_line_matches():
    for name, (module, attr, help_line) in PACKAGE_COMMANDS.items():
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command) and cmd.name == name, name
        # The top-level list shows the line kept in PACKAGE_COMMANDS: it must not drift from the command's own.
        assert (cmd.help or "").split("\n\n")[0].replace("\n", " ").startswith(help_line.rstrip(".")), name


def test_a_subcommand_still_runs_and_an_unknown_one_is_refused():
    runner = CliRunner()
    got = runner.invoke(main, ["nft", "--help"])
    assert got.exit_code == 0 and "render" in got.output
    bad = runner.invoke(main, ["no-such-command"])
    assert bad.exit_code == 2 and "No such command" in bad.output
