"""Client IP to MAC through the kernel's neighbour table.

IPv4 (every address the gate is asked about) is read from /proc/net/arp, the neighbour table
of this process's network namespace: no pyroute2 (about 160 modules and 30 MB) in the gate,
and one small read instead of a netlink dump decoded in Python. IPv6 goes through pyroute2.
"""
from __future__ import annotations

import socket

# NUD_INCOMPLETE and NUD_FAILED entries carry no usable link-layer address.
_UNUSABLE = 0x01 | 0x20
ARP_TABLE = "/proc/net/arp"
_ATF_COM = 0x02  # the entry has a link-layer address (reachable, stale, delay or probe)


def mac_for_ip(ip: str) -> str | None:
    """The MAC the box last saw using `ip` on any interface, or None if it has none."""
    if ":" not in ip:
        return _arp_lookup(ip)
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for msg in ipr.get_neighbours(family=socket.AF_INET6, dst=ip):
            lladdr = msg.get_attr("NDA_LLADDR")
            if lladdr and not msg["state"] & _UNUSABLE:
                return lladdr.lower()
    return None


def _arp_lookup(ip: str, table: str = ARP_TABLE) -> str | None:
    # Columns: IP address, HW type, Flags, HW address, Mask, Device (one line per entry).
    with open(table, encoding="ascii") as fh:
        next(fh, None)
        for line in fh:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == ip and int(fields[2], 16) & _ATF_COM:
                mac = fields[3].lower()
                if mac != "00:00:00:00:00:00":
                    return mac
    return None
