"""Client IP to MAC through the kernel's neighbour table (pyroute2, netlink)."""
from __future__ import annotations

import socket

from pyroute2 import IPRoute

# NUD_INCOMPLETE and NUD_FAILED entries carry no usable link-layer address.
_UNUSABLE = 0x01 | 0x20


def mac_for_ip(ip: str) -> str | None:
    """The MAC the box last saw using `ip` on any interface, or None if it has none."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with IPRoute() as ipr:
        for msg in ipr.get_neighbours(family=family, dst=ip):
            lladdr = msg.get_attr("NDA_LLADDR")
            if lladdr and not msg["state"] & _UNUSABLE:
                return lladdr.lower()
    return None
