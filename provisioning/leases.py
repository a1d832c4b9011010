"""Turning one dnsmasq lease-script call into a ledger record."""
from __future__ import annotations

import os
from collections.abc import Mapping

from ledger.records import LeaseEvent
from base.addr import normalise_mac


def lease_event_from_dnsmasq(args: list[str], env: Mapping[str, str], now_ms: int) -> LeaseEvent:
    """Build a LeaseEvent from dnsmasq's arguments (event, MAC, IP, [hostname]) and environment.

    dnsmasq gives the expiry as DNSMASQ_LEASE_EXPIRES (Unix time) or, on builds with a broken
    RTC, as DNSMASQ_LEASE_LENGTH (seconds); on `del` neither is meaningful.
    """
    if len(args) < 3:
        raise ValueError(f"dnsmasq passed too few arguments: {args!r}")
    event, mac, ip = args[0], normalise_mac(args[1]), args[2]
    hostname = args[3] if len(args) > 3 and args[3] else env.get("DNSMASQ_SUPPLIED_HOSTNAME") or None
    expires_ms = None
    if event != "del":
        if env.get("DNSMASQ_LEASE_EXPIRES", "").isdigit():
            expires_ms = int(env["DNSMASQ_LEASE_EXPIRES"]) * 1000
        elif env.get("DNSMASQ_LEASE_LENGTH", "").isdigit():
            expires_ms = now_ms + int(env["DNSMASQ_LEASE_LENGTH"]) * 1000
    return LeaseEvent(event=event, mac=mac, ip=ip, hostname=hostname, expires_ms=expires_ms)


def environment() -> dict[str, str]:
    """The DNSMASQ_* part of this process's environment."""
    return {k: v for k, v in os.environ.items() if k.startswith("DNSMASQ_")}
