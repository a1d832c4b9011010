"""Config validation: every error names the key, the bad value and the fix."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from base.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "skillspot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def edited(old: str, new: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text, old
    return text.replace(old, new, 1)


def test_example_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.box.id == "dsd-bkk-01"
    assert cfg.portal.bot_prompt == "aggressive"
    assert cfg.ledger.retention_days >= 90
    assert str(cfg.network.lan_address.ip) == "10.99.0.1"


@pytest.mark.parametrize("old,new,key,value,fix", [
    ("lease_seconds = 3600", "lease_seconds = 5", "network.lease_seconds", "5", "120 to 86400"),
    ('channel_secret = "0123456789abcdef0123456789abcdef"', 'channel_secret = "secret"',
     "line.channel_secret", "'secret'", "32 lowercase hex"),
    ('bot_prompt = "aggressive"', 'bot_prompt = "always"', "portal.bot_prompt", "'always'", '"aggressive"'),
    ('lan_interface = "wlan0"', 'lan_interface = "a-very-long-interface-name"', "network.lan_interface",
     "'a-very-long-interface-name'", "at most 15"),
    ("retention_days = 90", "retention_days = 30", "ledger.retention_days", "30", "floor is 90"),
    ('lan_address = "10.99.0.1/24"', 'lan_address = "10.99.0.300/24"', "network.lan_address", "10.99.0.300", "with prefix"),
])
def test_bad_value_names_key_value_and_fix(tmp_path, old, new, key, value, fix):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, edited(old, new)))
    message = str(err.value)
    line = next(l for l in message.splitlines() if f"[{key}]" in l)
    assert value in line and "Fix:" in line and fix in line, line


def test_dhcp_range_outside_the_lan_is_explained(tmp_path):
    with pytest.raises(ConfigError, match=r"\[network\].*outside 10\.99\.0\.0/24.*fix"):
        load_config(write(tmp_path, edited('dhcp_range = ["10.99.0.50", "10.99.0.250"]',
                                           'dhcp_range = ["10.99.0.50", "10.98.0.250"]')))


def test_unknown_and_missing_keys(tmp_path):
    text = edited('coordinator = "IT desk, 02-000-0000"', 'coordinater = "typo"')
    text = text.replace('hostname = "wifi.dsd.go.th"', "")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "[box.coordinater] is not a known key" in message
    assert "[portal.hostname] is missing. Fix: add it" in message


def test_tls_cert_without_key(tmp_path):
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(write(tmp_path, edited('# tls_cert = "/etc/skillspot/portal.crt"', 'tls_cert = "/x.crt"')))


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 3"):
        load_config(write(tmp_path, "[box]\nid = 'x'\noffice = \n"))
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "nope.toml")


def test_config_check_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "skillspot.cli", "config", "check", str(EXAMPLE)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "skillspot.cli", "config", "check",
                          str(write(tmp_path, edited("channel = 6", "channel = 99")))], capture_output=True, text=True)
    assert bad.returncode == 1 and "[hostapd.channel] = 99" in bad.stderr
