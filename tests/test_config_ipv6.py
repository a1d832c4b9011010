"""network.ipv6 = "off" | "on" and its prefix: validated with the key and the fix; dnsmasq
advertises the prefix only when on (issue 16, item 1)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from base.config import ConfigError, load_config, parse_config
from netcfg.ruleset import RulesetParams, render_ruleset
from provisioning.dnsmasq import DnsmasqFiles, render_dnsmasq

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"
FILES = DnsmasqFiles(conf=Path("/x/dnsmasq.conf"), lease_hook=Path("/x/hook"), lease_file=Path("/x/leases"))


def with_network(**network):
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["network"] = {**data["network"], **network}
    return parse_config(data, "test.toml")


def test_off_by_default_no_ra_and_nothing_ipv6_forwarded():
    cfg = load_config(EXAMPLE)
    assert cfg.network.ipv6 == "off" and cfg.network.lan_address6 is None
    assert "enable-ra" not in render_dnsmasq(cfg, FILES)
    text = render_ruleset(RulesetParams.from_config(cfg.network, cfg.portal))
    assert 'network.ipv6 = "off"' in text and "ip6 saddr !=" not in text


def test_on_advertises_the_prefix_and_gates_by_it():
    cfg = with_network(ipv6="on", ipv6_prefix="2001:db8:10:1::/64")
    assert str(cfg.network.lan_address6) == "2001:db8:10:1::1/64"
    conf = render_dnsmasq(cfg, FILES)
    assert "enable-ra" in conf and "dhcp-range=2001:db8:10:1::,ra-only,64,3600" in conf
    assert "host-record=wifi.dsd.go.th,10.99.0.1,2001:db8:10:1::1" in conf
    text = render_ruleset(RulesetParams.from_config(cfg.network, cfg.portal))
    assert "ip6 saddr != 2001:db8:10:1::/64 counter reject" in text
    assert "ether saddr @authorised_mac6 update @active_mac6 { ether saddr } accept" in text


@pytest.mark.parametrize("network,words", [
    ({"ipv6": "on"}, 'ipv6 = "on" needs ipv6_prefix'),
    ({"ipv6": "on", "ipv6_prefix": "2001:db8:10::/48"}, "is a /48; fix: use a /64"),
    ({"ipv6": "on", "ipv6_prefix": "fe80::/64"}, "not a global or unique-local prefix"),
    ({"ipv6_prefix": "2001:db8:10:1::/64"}, 'ipv6_prefix is set but ipv6 = "off"'),
    ({"ipv6": "yes"}, "[network.ipv6] = 'yes'"),
])
def test_bad_ipv6_settings_name_the_fix(network, words):
    with pytest.raises(ConfigError) as err:
        with_network(**network)
    assert words in str(err.value) and "fix" in str(err.value).lower()
