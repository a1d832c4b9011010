"""Letting a device in and shutting it out, with the ledger rows that go with each.

Device limit policy (portal.max_devices_per_user): when a LINE user brings one device more than
allowed, the user's *oldest* online device is revoked (a logout row with reason
"device_limit") and the new one is let in. Refusing the new device instead would lock people
out whenever their phone changes its random MAC (iOS "rotating" addresses, a forgotten
network) or when they move from a phone to a laptop: the newest device is almost always the
one in the visitor's hand.
"""
from __future__ import annotations

from typing import Any

from ledger.db import Ledger
from ledger.records import Login, active_logins, log_event, record_login, record_logout
from netcfg.gate import Gate


def online_devices(ledger: Ledger, gate: Gate, line_user_id: str) -> dict[str, dict]:
    """The user's devices the gate lets through now: MAC -> that device's newest active login."""
    online = {a.mac for a in gate.authorised()}
    devices: dict[str, dict] = {}
    for row in active_logins(ledger):  # newest first
        if row["line_user_id"] == line_user_id and row["mac"] in online:
            devices.setdefault(row["mac"], row)
    return devices


def end_session(ledger: Ledger, gate: Gate, mac: str, reason: str, **detail: Any) -> list[str]:
    """Shut `mac` out now and close every active login row of it; returns the addresses it had."""
    addresses = gate.revoke(mac)
    rows = [r for r in active_logins(ledger) if r["mac"] == mac]
    for row in rows:
        record_logout(ledger, mac, reason, login_id=row["id"])
    if not rows:
        record_logout(ledger, mac, reason)
    log_event(ledger, f"session_end_{reason}", mac, addresses=addresses, **detail)
    return addresses


def enforce_device_limit(ledger: Ledger, gate: Gate, line_user_id: str, new_mac: str, limit: int) -> list[str]:
    """Revoke the user's oldest online devices so that, with `new_mac`, at most `limit` remain.
    Returns the MACs revoked."""
    devices = {m: r for m, r in online_devices(ledger, gate, line_user_id).items() if m != new_mac}
    excess = len(devices) + 1 - limit
    if excess <= 0:
        return []
    oldest = sorted(devices, key=lambda m: (devices[m]["at_ms"], devices[m]["id"]))[:excess]
    for mac in oldest:
        end_session(ledger, gate, mac, "device_limit", line_user_id=line_user_id, replaced_by=new_mac)
    return oldest


def admit(ledger: Ledger, gate: Gate, login: Login, seconds: int, limit: int) -> int:
    """Let `login.mac` through for `seconds`, keep the user within `limit` devices, record the
    login; returns the login row id.

    The row is written before the gate opens: a device must never be online without its
    traffic-data record (a ledger failure raises and nobody is let in). If the gate then
    fails, the row is closed with a "gate_error" logout and the error is raised.
    """
    enforce_device_limit(ledger, gate, login.line_user_id, login.mac, limit)
    login_id = record_login(ledger, login)
    try:
        gate.authorise(login.mac, login.ip, seconds)
    except Exception:
        record_logout(ledger, login.mac, "gate_error", login_id=login_id)
        raise
    return login_id
