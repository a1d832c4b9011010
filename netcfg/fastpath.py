"""Cutting a revoked device off its open connections, whatever shortcut the forward path takes.

The forward chain lets a device's packets through on one lookup in the `recent` set for a few
seconds after a full check (netcfg.ruleset), and replies to its connections ride on conntrack.
Removing the device from `authorised` alone would leave both running for a while, so the gate
calls `cut_device` (or puts `recent_removals` into its own revoke transaction and then calls
`forget_connections`) every time it lets a device out.

Only the standard library is imported here; libnftables is loaded when `cut_device` runs.
"""
from __future__ import annotations

import ipaddress
import re
import subprocess

from netcfg.ruleset import FAMILY, RECENT_SET, TABLE

_DELETED = re.compile(r"(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted")


class FastPathError(Exception):
    """The kernel refused to forget a device; the message names what failed and nft's words."""


def recent_removals(mac: str, ips: list[str]) -> list[dict]:
    """libnftables JSON commands that remove (mac, ip) from `recent` for each ip, whether or not
    the element is there now: each is added (a no-op when present) and then deleted, so the
    transaction they are part of never fails on an element that already timed out."""
    commands: list[dict] = []
    for ip in ips:
        elem = {"family": FAMILY, "table": TABLE, "name": RECENT_SET, "elem": [{"concat": [mac, ip]}]}
        commands.append({"add": {"element": elem}})
        commands.append({"delete": {"element": elem}})
    return commands


def forget_connections(ips: list[str]) -> int:
    """Delete every conntrack entry a device opened from any of `ips` (IPv4); how many went.

    Without its entry a reply from the internet is no longer `established` and is dropped, and
    the device's next packet is checked again from the start and refused. Uses conntrack(8)
    (Debian package `conntrack`): revocations are rare, and it deletes by source address.
    """
    total = 0
    for ip in ips:
        ipaddress.IPv4Address(ip)  # a clear error on a bad address, never a conntrack filter typo
        proc = subprocess.run(["conntrack", "-D", "-f", "ipv4", "-s", ip], capture_output=True, text=True)
        found = _DELETED.search(proc.stderr)
        if found is None:
            raise FastPathError(f"conntrack -D -s {ip} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
        total += int(found.group(1))  # exit status is 1 when none matched: that is fine
    return total


def cut_device(mac: str, ips: list[str], nft=None) -> int:
    """Take (mac, ip) for every ip out of the forwarding fast path and delete the device's
    connections; returns how many connections were deleted. Call it after the device's
    elements in `authorised`/`active` are gone (otherwise its next packet lets it back in).

    `nft` is an open `nftables.Nftables` handle to reuse (the gate's own); one is made if not.
    """
    if ips:
        if nft is None:
            import nftables  # libnftables only where a device is actually cut
            nft = nftables.Nftables()
        rc, _out, err = nft.json_cmd({"nftables": recent_removals(mac, ips)})
        if rc != 0:
            raise FastPathError(f"removing {mac} from the {RECENT_SET} set failed: {err.strip()[:300]}")
    return forget_connections(ips)
