"""Letting a device in and shutting it out, with the ledger rows that go with each.

Write order (chosen so that a crash at any step leaves the ledger claiming at most *more*
access than the kernel gave, never less, and the gate's reconciliation trims the claim):

  login:  1. login row (intent)  2. gate.authorise  3. "session_admitted" event (confirmation)
  end:    1. "session_ending" event with the reason (intent)  2. gate.revoke  3. logout row(s)

A crash after step 1 of a login leaves a live login row the kernel never let in: the sweeper
closes it as "not_admitted". A crash between steps 2 and 3 of an end leaves a live row the
kernel no longer holds: the sweeper closes it with the reason of the intent. Every login row
gets exactly one logout row (ledger.records.close_login).

Admission decisions (the device limit reads who is online, then changes it) are serialised
across every process that admits (portal workers, the lease hook, RADIUS, the CLI, the gate's
sweeper) with one advisory file lock, so two logins of one user cannot both see room for one
more device.

Device limit policy (portal.max_devices_per_user): when a LINE user brings one device more than
allowed, the user's *oldest* online device is ended ("device_limit") and the new one is let
in. Refusing the new device instead would lock people out whenever their phone changes its
random MAC or when they move from a phone to a laptop: the newest device is almost always the
one in the visitor's hand.

A returning device whose last LINE login on this box is younger than portal.returning_days is
let in again when it takes a lease (Login(method="returning"), same LINE user), except after an
admin revoke or a device-limit displacement since that login, or when the terms changed.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from base.faults import fault
from ledger.db import Ledger
from ledger.records import (Login, close_login, ended_since, last_line_login, live_logins_of, log_event,
                            record_login)
from netcfg.gate import Gate

log = logging.getLogger("skillspot.sessions")

# Why a session ended: every logout row carries one of these.
REASONS = {
    "logout": "the visitor logged out on the portal",
    "admin_revoke": "an admin shut the device out",
    "device_limit": "the LINE user brought one device more than allowed; the oldest was ended",
    "session_timeout": "the session's time ran out (the kernel dropped the element)",
    "idle": "the device sent nothing for portal.idle_seconds",
    "radius_stop": "the access point reported the station gone (RADIUS Accounting Stop)",
    "relogin": "the same device logged in again; the new login replaces this one",
    "not_admitted": "the login was recorded but the gate never let the device in (crash or gate error)",
    "kernel_lost": "the kernel no longer held the device at the gate's start (reboot or idle while down)",
    "gate_error": "the gate refused the device; it stayed at the portal",
}
# Logouts after which a device must log in with LINE again: someone decided to shut it out.
BLOCKING_REASONS = ("admin_revoke", "device_limit")


@dataclass(frozen=True)
class SessionPolicy:
    """The [portal] settings the session layer needs (so it does not depend on the whole config)."""

    session_seconds: int
    max_devices_per_user: int
    returning_days: int
    terms_version: str

    @classmethod
    def from_config(cls, portal) -> "SessionPolicy":
        """From a base.config.PortalConfig."""
        return cls(session_seconds=portal.session_seconds, max_devices_per_user=portal.max_devices_per_user,
                   returning_days=portal.returning_days, terms_version=portal.terms_version)


class SessionManager:
    """The session lifecycle: admit, end for a reason, re-admit returning devices.

    `disconnect(mac)` asks the access point to drop a station (RADIUS DAS); None when DAS is
    off. `lock_path` is the admission lock shared by every process of the box.
    """

    def __init__(self, ledger: Ledger, gate: Gate, policy: SessionPolicy, lock_path: Path,
                 disconnect: Callable[[str], Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.gate = gate
        self.policy = policy
        self.lock_path = Path(lock_path)
        self.disconnect = disconnect
        self.clock = clock

    @contextmanager
    def admission_lock(self) -> Iterator[None]:
        """Hold the box-wide admission lock (an flock: released by the kernel if we die)."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o660)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- who is online --------------------------------------------------------------

    def online_devices(self, line_user_id: str) -> dict[str, dict]:
        """The user's devices the gate lets through now: MAC -> that device's newest live login."""
        devices: dict[str, dict] = {}
        for row in live_logins_of(self.ledger, line_user_id=line_user_id):  # newest first
            if row["mac"] not in devices and self.gate.authorised(mac=row["mac"]):
                devices[row["mac"]] = row
        return devices

    # -- admitting ------------------------------------------------------------------

    def admit(self, login: Login, seconds: int | None = None) -> int:
        """Let `login.mac` through for `seconds` (default portal.session_seconds), keep the user
        within the device limit, record the login; returns the login row id.

        Raises LedgerError (nobody let in) or GateError/GateUnavailable (the login row is closed
        as "gate_error"; the device stays at the portal)."""
        seconds = seconds or self.policy.session_seconds
        with self.admission_lock():
            fault("login.locked")
            self._enforce_device_limit(login.line_user_id, login.mac)
            older = live_logins_of(self.ledger, mac=login.mac)
            login_id = record_login(self.ledger, login)                       # 1. intent
            fault("login.after_intent")
            try:
                self.gate.authorise(login.mac, login.ip, seconds)             # 2. gate
            except Exception as exc:
                close_login(self.ledger, login_id, login.mac, "gate_error")
                log_event(self.ledger, "gate_error", login.mac, login_id=login_id, error=f"{type(exc).__name__}: {exc}"[:300])
                raise
            fault("login.after_gate")
            log_event(self.ledger, "session_admitted", login.mac, login_id=login_id, ip=login.ip)  # 3. confirm
            fault("login.after_confirm")
            # The kernel element was replaced by the new one: the older rows of this device end here.
            for row in older:
                close_login(self.ledger, row["id"], login.mac, "relogin")
        return login_id

    def _enforce_device_limit(self, line_user_id: str, new_mac: str) -> list[str]:
        devices = {m: r for m, r in self.online_devices(line_user_id).items() if m != new_mac}
        excess = len(devices) + 1 - self.policy.max_devices_per_user
        if excess <= 0:
            return []
        oldest = sorted(devices, key=lambda m: (devices[m]["at_ms"], devices[m]["id"]))[:excess]
        for mac in oldest:
            self._end_locked(mac, "device_limit", {"line_user_id": line_user_id, "replaced_by": new_mac})
        return oldest

    def readmit(self, mac: str, ip: str) -> bool:
        """Let a returning `mac` at `ip` in again if its LINE login is recent enough (called on
        every lease event); True if it was let in. A lease renewal of a device that is still let
        through with the same address is not a new session."""
        days = self.policy.returning_days
        if days == 0 or any(a.ip == ip for a in self.gate.authorised(mac=mac)):
            return False
        last = last_line_login(self.ledger, mac)
        now_ms = int(self.clock() * 1000)
        if last is None or now_ms - last["at_ms"] >= days * 86400 * 1000:
            return False
        if last["consent_version"] != self.policy.terms_version:
            log_event(self.ledger, "returning_refused", mac, reason="terms_changed", ip=ip)
            return False
        if ended_since(self.ledger, mac, last["at_ms"], BLOCKING_REASONS):
            log_event(self.ledger, "returning_refused", mac, reason="revoked_since_login", ip=ip)
            return False
        seconds = self.policy.session_seconds
        self.admit(Login(
            method="returning", line_user_id=last["line_user_id"], display_name=last["display_name"],
            friend=None if last["friend"] is None else bool(last["friend"]), friendship_changed=None,
            consent_version=last["consent_version"], mac=mac, ip=ip, expires_ms=now_ms + seconds * 1000), seconds)
        return True

    # -- ending -----------------------------------------------------------------------

    def end(self, mac: str, reason: str, **detail: Any) -> list[str]:
        """End `mac`'s session now for `reason` (one of REASONS): gate, one logout row per live
        login, and for an admin revoke a RADIUS Disconnect. Returns the addresses it had."""
        with self.admission_lock():
            addresses = self._end_locked(mac, reason, detail)
        if reason == "admin_revoke" and self.disconnect is not None:  # the station may linger without a session
            self._disconnect(mac, detail.get("admin"))
        return addresses

    def _end_locked(self, mac: str, reason: str, detail: dict) -> list[str]:
        if reason not in REASONS:
            raise ValueError(f"unknown session end reason {reason!r}")
        rows = live_logins_of(self.ledger, mac=mac)
        if not rows and not self.gate.authorised(mac=mac):
            return []  # nothing to end (e.g. a retransmitted Accounting Stop)
        log_event(self.ledger, "session_ending", mac, reason=reason,                      # 1. intent
                  login_ids=[r["id"] for r in rows], **detail)
        fault("end.after_intent")
        addresses = self.gate.revoke(mac)                                                 # 2. gate
        fault("end.after_gate")
        for row in rows:                                                                  # 3. confirm
            close_login(self.ledger, row["id"], mac, reason)
        return addresses

    def close_ended(self, row: dict, reason: str, **detail: Any) -> bool:
        """Write the logout of a session the kernel already ended (timeout, idle, reconciliation);
        False if another process closed it first."""
        closed = close_login(self.ledger, row["id"], row["mac"], reason)
        if closed and detail:
            log_event(self.ledger, "session_closed", row["mac"], login_id=row["id"], reason=reason, **detail)
        return closed

    def _disconnect(self, mac: str, admin: str | None) -> None:
        try:
            result = self.disconnect(mac)
            log_event(self.ledger, "das_disconnect", mac, admin=admin, acked=getattr(result, "acked", None),
                      detail=getattr(result, "detail", str(result)))
        except Exception as exc:  # noqa: BLE001 - the gate is already shut; a failed Disconnect is only noted
            log_event(self.ledger, "das_disconnect", mac, admin=admin, acked=False,
                      detail=f"{type(exc).__name__}: {exc}")
