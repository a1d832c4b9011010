"""The gate: the one interface through which anything lets a device in or out.

The portal, the admin page and RADIUS depend on this protocol, not on nftables, so a test
can hand them the real kernel-backed gate inside a namespace, or the in-memory one where
no kernel is available.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol

from netcfg.nft import Authorisation


class Gate(Protocol):
    """Let devices through the firewall and find who is behind an address."""

    def authorise(self, mac: str, ip: str, seconds: int) -> None: ...
    def revoke(self, mac: str) -> list[str]: ...
    def authorised(self) -> list[Authorisation]: ...
    def mac_for_ip(self, ip: str) -> str | None: ...


class KernelGate:
    """The real gate: nftables sets for access, the neighbour table for MACs."""

    def __init__(self) -> None:
        from netcfg.nft import NftSets  # libnftables is loaded only where the gate is real
        self._sets = NftSets()

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        """Let (mac, ip) through for `seconds`; the kernel drops it when they run out."""
        self._sets.authorise(mac, ip, seconds)

    def revoke(self, mac: str) -> list[str]:
        """Shut `mac` out now; returns the addresses it had."""
        return self._sets.revoke(mac)

    def authorised(self) -> list[Authorisation]:
        """Everything the kernel lets through now."""
        return self._sets.list()

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC behind a client address, from the neighbour table."""
        from netcfg.neighbours import mac_for_ip
        return mac_for_ip(ip)


class MemoryGate:
    """An in-memory gate with kernel-like expiry, for tests and development without root."""

    def __init__(self, neighbours: dict[str, str] | None = None, clock=time.monotonic) -> None:
        self.neighbours = dict(neighbours or {})
        self._until: dict[tuple[str, str], tuple[int, float]] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        with self._lock:
            for key in [k for k in self._until if k[0] == mac]:
                del self._until[key]
            self._until[(mac, ip)] = (seconds, self._clock() + seconds)

    def revoke(self, mac: str) -> list[str]:
        with self._lock:
            keys = [k for k in self._until if k[0] == mac]
            for key in keys:
                del self._until[key]
        return [ip for _, ip in keys]

    def authorised(self) -> list[Authorisation]:
        now = self._clock()
        with self._lock:
            return [Authorisation(mac=m, ip=i, timeout=t, expires=int(until - now))
                    for (m, i), (t, until) in self._until.items() if until > now]

    def mac_for_ip(self, ip: str) -> str | None:
        return self.neighbours.get(ip)
