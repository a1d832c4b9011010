"""Placeholder and weak secrets: `config check` warns, the daemons refuse the example's
placeholders unless the demo/test override is set (issue 16, item 5)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from base.config import (ALLOW_EXAMPLE_SECRETS_ENV, ConfigError, load_config, refuse_placeholder_secrets,
                         secret_problems)
from skillspot.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"
OWN = {
    'secret_key = "change-me-to-32-or-more-random-characters!!"': 'secret_key = "Q3xv9Lr2mT8wKc1ZpY7hN4bJd6sF0gAe"',
    'channel_secret = "0123456789abcdef0123456789abcdef"': 'channel_secret = "9f3a1c7e5b2d4f6a8c0e1b3d5f7a9c2e"',
    'das_secret = "das-secret-change-me"': 'das_secret = "Hk2Lm9Qr4Tv7Wx1Yz3Ab"',
    'secret = "radius-secret-change-me"': 'secret = "Pq8Rs2Tu6Vw0Xy4Za7Bc"',
}


def config_text(**replace: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in {**OWN, **replace}.items():
        assert old in text or old in OWN.values(), old
        text = text.replace(old, new, 1)
    return text


def test_the_example_placeholders_are_named_one_by_one():
    problems = secret_problems(load_config(EXAMPLE))
    assert [(p.key, p.placeholder) for p in problems] == [
        ("portal.secret_key", True), ("line.channel_secret", True), ("radius.das_secret", True),
        ("radius.clients[0].secret", True)]
    assert all("Fix:" in p.message for p in problems)


def test_own_secrets_pass_and_short_or_plain_ones_are_warned(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(config_text(), encoding="utf-8")
    assert secret_problems(load_config(good)) == []
    weak = tmp_path / "weak.toml"
    weak.write_text(config_text(**{'secret = "Pq8Rs2Tu6Vw0Xy4Za7Bc"': 'secret = "hostapd1"',
                                   'das_secret = "Hk2Lm9Qr4Tv7Wx1Yz3Ab"': 'das_secret = "abababababababababab"'}),
                    encoding="utf-8")
    problems = {p.key: p for p in secret_problems(load_config(weak))}
    assert set(problems) == {"radius.clients[0].secret", "radius.das_secret"}
    assert "only 8 characters" in problems["radius.clients[0].secret"].message
    assert "2 different characters" in problems["radius.das_secret"].message
    assert not any(p.placeholder for p in problems.values())
    refuse_placeholder_secrets(load_config(weak), "radius", environ={})  # weak: warned, not refused


def test_placeholders_are_refused_unless_the_override_is_set():
    cfg = load_config(EXAMPLE)
    with pytest.raises(ConfigError) as err:
        refuse_placeholder_secrets(cfg, "portal", environ={})
    assert "skillspot portal will not start" in str(err.value) and "[portal.secret_key]" in str(err.value)
    assert ALLOW_EXAMPLE_SECRETS_ENV in str(err.value)
    with pytest.raises(ConfigError):
        refuse_placeholder_secrets(cfg, "portal", environ={ALLOW_EXAMPLE_SECRETS_ENV: "yes"})  # only "1"
    refuse_placeholder_secrets(cfg, "portal", environ={ALLOW_EXAMPLE_SECRETS_ENV: "1"})


def test_skillspot_portal_refuses_the_example_as_shipped(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_EXAMPLE_SECRETS_ENV, raising=False)
    path = tmp_path / "c.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("/var/lib/skillspot", str(tmp_path / "data")))
    result = CliRunner().invoke(main, ["-c", str(path), "portal", "--bind", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert "will not start" in result.output and "[portal.secret_key]" in result.output


@pytest.mark.parametrize("command", [["radius"], ["gate"]])
def test_radius_and_gate_refuse_the_example_as_shipped(tmp_path, monkeypatch, command):
    monkeypatch.delenv(ALLOW_EXAMPLE_SECRETS_ENV, raising=False)
    path = tmp_path / "c.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("/var/lib/skillspot", str(tmp_path / "data")))
    result = CliRunner().invoke(main, ["-c", str(path), *command])
    assert result.exit_code == 1, result.output
    assert f"skillspot {command[0]} will not start" in result.output
    assert "[radius.clients[0].secret]" in result.output


def test_config_check_warns_but_passes(tmp_path):
    result = CliRunner().invoke(main, ["config", "check", str(EXAMPLE)])  # output: stdout and stderr
    assert result.exit_code == 0
    assert "warning: [portal.secret_key] is a placeholder" in result.output
    own = tmp_path / "own.toml"
    own.write_text(config_text(), encoding="utf-8")
    clean = CliRunner().invoke(main, ["config", "check", str(own)])
    assert clean.exit_code == 0 and "warning" not in clean.output and "OK" in clean.output
