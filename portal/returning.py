"""Letting a returning device in again without the portal (called by the dnsmasq lease hook).

A device whose last LINE login on this box is younger than portal.returning_days is let in
for a new session when it takes a lease, recorded as Login(method="returning") with the same
LINE user. Not readmitted: a device an admin revoked (or the device limit displaced) since that
login, a login made under older terms (the visitor must see the new notice), and a device the
gate already lets through with the same address (a lease renewal is not a new session).
"""
from __future__ import annotations

import time
from typing import Callable

from ledger.db import Ledger
from ledger.records import Login, log_event
from netcfg.gate import Gate
from portal.sessions import admit
from base.addr import normalise_mac
from base.config import Config

# Logouts after which a device must log in with LINE again: someone decided to shut it out.
BLOCKING_REASONS = ("admin_revoke", "device_limit")


def last_line_login(ledger: Ledger, mac: str) -> dict | None:
    """The newest LINE (not "returning") login of `mac`, or None."""
    for row in ledger.db.query("SELECT * FROM logins WHERE mac = ? AND method = 'line' "
                               "ORDER BY at_ms DESC, id DESC LIMIT 1", [mac]):
        return row
    return None


def _shut_out_since(ledger: Ledger, mac: str, since_ms: int) -> bool:
    marks = ",".join("?" for _ in BLOCKING_REASONS)
    found = ledger.db.execute(f"SELECT 1 FROM logouts WHERE mac = ? AND at_ms >= ? AND reason IN ({marks}) LIMIT 1",
                              [mac, since_ms, *BLOCKING_REASONS]).fetchone()
    return found is not None


def readmit(config: Config, ledger: Ledger, gate: Gate, mac: str, ip: str,
            clock: Callable[[], float] = time.time) -> bool:
    """Let `mac` at `ip` in again if its LINE login is recent enough; True if it was let in.

    Raises ValueError for a malformed MAC; ledger and gate errors propagate (the caller, the
    lease hook, reports them; the lease itself is already recorded).
    """
    mac = normalise_mac(mac)
    days = config.portal.returning_days
    if days == 0:
        return False
    if any(a.mac == mac and a.ip == ip for a in gate.authorised()):
        return False
    last = last_line_login(ledger, mac)
    now_ms = int(clock() * 1000)
    if last is None or now_ms - last["at_ms"] >= days * 86400 * 1000:
        return False
    if last["consent_version"] != config.portal.terms_version:
        log_event(ledger, "returning_refused", mac, reason="terms_changed", ip=ip)
        return False
    if _shut_out_since(ledger, mac, last["at_ms"]):
        log_event(ledger, "returning_refused", mac, reason="revoked_since_login", ip=ip)
        return False
    seconds = config.portal.session_seconds
    admit(ledger, gate, Login(
        method="returning", line_user_id=last["line_user_id"], display_name=last["display_name"],
        friend=None if last["friend"] is None else bool(last["friend"]), friendship_changed=None,
        consent_version=last["consent_version"], mac=mac, ip=ip, expires_ms=now_ms + seconds * 1000),
        seconds, config.portal.max_devices_per_user)
    return True
