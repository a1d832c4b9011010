"""Rendering hostapd.conf for the open SSID from the [hostapd] and [radius] sections."""
from __future__ import annotations

import ipaddress
import re

import jinja2

from base.config import HostapdConfig, RadiusConfig

# One hostapd.conf line is KEY=VALUE up to the newline: a value with a control character
# could smuggle in another key.
_SAFE_VALUE = re.compile(r"^[^\x00-\x1f\x7f]*$")
_KEY = re.compile(r"^[a-z0-9_]+$")

_env = jinja2.Environment(loader=jinja2.PackageLoader("provisioning", "templates"), autoescape=False,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True)


def _check(name: str, value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise ValueError(f"{name} contains a control character (newline?); fix: remove it from the config")
    return value


def render_hostapd_conf(hostapd: HostapdConfig, radius: RadiusConfig, *, extra: dict[str, str] | None = None) -> str:
    """hostapd.conf text for hostapd 2.10+; ValueError names the config key to fix.

    `extra` appends KEY=VALUE lines (tests add ieee8021x/eap_server for a wired station)."""
    ssid = hostapd.ssid.encode("utf-8")
    if len(ssid) > 32:
        raise ValueError(f"hostapd.ssid is {len(ssid)} bytes in UTF-8 (Thai letters take 3); fix: at most 32 bytes")
    client = next((c for c in radius.clients if c.address == hostapd.own_ip_addr), None)
    if client is None:
        raise ValueError(f"no [[radius.clients]] entry has address {hostapd.own_ip_addr} (hostapd.own_ip_addr); "
                         "fix: add one, with the secret hostapd should use")
    server = radius.listen_address
    if server == ipaddress.IPv4Address("0.0.0.0"):
        server = hostapd.own_ip_addr  # listening everywhere: reach it on hostapd's own address
    if radius.das_secret and len(radius.das_secret) < 8:
        raise ValueError("radius.das_secret is shorter than 8 characters; fix: use a long random secret")
    for key, value in (("radius.clients secret", client.secret), ("radius.das_secret", radius.das_secret),
                       ("hostapd.nas_identifier", hostapd.nas_identifier),
                       ("hostapd.ctrl_interface", hostapd.ctrl_interface)):
        _check(key, value)
    if any(ch.isspace() for ch in radius.das_secret):
        raise ValueError("radius.das_secret contains a space; fix: hostapd reads it up to the first space")
    items = []
    for key, value in (extra or {}).items():
        if not _KEY.match(key):
            raise ValueError(f"extra hostapd key {key!r} is not a hostapd key name")
        items.append((key, _check(key, str(value))))
    return _env.get_template("hostapd.conf.j2").render(
        h=hostapd, r=radius, ssid_hex=ssid.hex(), server=server, secret=client.secret,
        das_client=server, extra=items)
