"""The gate: the one interface through which anything lets a device in or out.

The session layer, the portal, the admin page, RADIUS and the CLI depend on this protocol,
not on nftables. In production they hold a `GateClient` (netcfg/gateclient.py) that talks to
the one `skillspot gate` process, the only writer of the nft sets; tests hand them that
client against a real gate in a namespace, or `MemoryGate` where no kernel is available.

This module imports nothing heavy: the lease hook and the portal import it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Protocol


class GateError(Exception):
    """The gate refused a change (bad input, or the kernel said no); the message says why."""


class GateUnavailable(GateError):
    """The gate process cannot be reached; nothing was changed."""


@dataclass(frozen=True)
class Authorisation:
    """One device the gate lets through now."""

    mac: str
    ip: str
    timeout: int   # the session's length, seconds
    expires: int   # seconds left

    def to_dict(self) -> dict:
        """Plain data for the gate's wire protocol."""
        return asdict(self)


class Gate(Protocol):
    """Let devices through the firewall and find who is behind an address."""

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        """Let (mac, ip) through for `seconds`, replacing any earlier address of `mac`."""

    def revoke(self, mac: str) -> list[str]:
        """Shut `mac` out now; returns the addresses it had (empty if none)."""

    def authorised(self, mac: str | None = None, ip: str | None = None) -> list[Authorisation]:
        """Devices let through now, all of them or only those of one MAC and/or one address."""

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC behind a client address (neighbour table), or None."""

    def health(self) -> dict:
        """The gate's own state: devices let through, last sweep, uptime."""


class MemoryGate:
    """An in-memory gate with kernel-like expiry, for tests and development without root."""

    def __init__(self, neighbours: dict[str, str] | None = None, clock=time.monotonic) -> None:
        self.neighbours = dict(neighbours or {})
        self._until: dict[str, tuple[str, int, float]] = {}  # mac -> (ip, timeout, until)
        self._clock = clock
        self._lock = threading.Lock()

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        if seconds <= 0:
            raise GateError("seconds must be positive")
        with self._lock:
            self._until[mac] = (ip, seconds, self._clock() + seconds)

    def revoke(self, mac: str) -> list[str]:
        with self._lock:
            found = self._until.pop(mac, None)
        return [found[0]] if found and found[2] > self._clock() else []

    def authorised(self, mac: str | None = None, ip: str | None = None) -> list[Authorisation]:
        now = self._clock()
        with self._lock:
            return [Authorisation(mac=m, ip=i, timeout=t, expires=int(until - now))
                    for m, (i, t, until) in self._until.items()
                    if until > now and (mac is None or m == mac) and (ip is None or i == ip)]

    def mac_for_ip(self, ip: str) -> str | None:
        return self.neighbours.get(ip)

    def health(self) -> dict:
        return {"ok": True, "devices": len(self.authorised()), "kind": "memory"}
