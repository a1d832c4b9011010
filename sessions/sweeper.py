"""Keeping the ledger and the kernel in agreement: reconciliation at the gate's start and a
sweep every gate.sweep_seconds while it runs (both are the same pass).

The kernel ends sessions by itself (an element's timeout, the idle set running out) and a crash
can stop a login or an end half-way (see sessions/manager.py for the write order). Each pass:

  1. an index entry whose time ran out      -> forgotten; its login closed "session_timeout"
  2. an index entry missing from the idle sets -> revoked in the kernel; its login closed "idle"
     (idle only if neither its (MAC, IPv4) element nor, for IPv6 traffic, its MAC's is there)
  3. a live login the gate does not hold   -> closed with the reason of its "session_ending"
     intent if there is one, else "kernel_lost" if the gate had confirmed it, else "not_admitted"
  4. older live logins of a device that logged in again -> closed "relogin"
  5. an unclosed login past its expiry     -> closed "session_timeout"
  6. a device the gate holds with no live login -> removed from the kernel (event "reconcile_removed")
  7. an end whose process died after its "session_ending" intent -> finished: the device is
     revoked and its logins closed with the intent's reason (an admin's revoke is never lost)

A full pass (at the gate's start and every `full_every` seconds, an hour by default) reads every
unclosed login; the passes between read only what changed: logins newer than the last pass
saw, logins whose expiry fell since, and intents since (a device with a new login is always
settled again, so a relogin is found). At 100,000 devices reading every live login each pass
held the gate's interpreter for a quarter of a second every sweep. The idle set is read in a
child process when the index is large (netcfg/idlescan.py).

Candidates are found without the admission lock (reading the idle set takes long at 100,000
devices) and each is checked again, cheaply, under it before anything is written, so a login
or an end running meanwhile is never undone. A logout row for a session the kernel ended is
therefore written within sweep_seconds of a timeout, and within max(sweep_seconds, 10 idle-set
reads) plus one read of an idle expiry (the read takes about 0.5 s at 100,000 devices).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Container

from ledger.records import (events_of, events_since, last_login_id, live_logins_of, log_event, unclosed_ids,
                            unclosed_logins)
from netcfg.gated import Entry, GateService
from netcfg.idlescan import CHILD_ABOVE, idle_among
from sessions.manager import SessionManager

log = logging.getLogger("skillspot.sweeper")


@dataclass
class SweepReport:
    """What one pass did, by reason (for the log, the tests and the gate's health)."""

    closed: dict[str, int] = field(default_factory=dict)
    removed: int = 0
    seconds: float = 0.0

    def add(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1


class Sweeper:
    """One reconciliation pass at a time over a GateService (in the gate process) and the ledger."""

    def __init__(self, sessions: SessionManager, service: GateService, active_keys: Callable[[], Container[tuple[str, str]]],
                 idle_every: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 full_every: float = 3600.0, child_above: int = CHILD_ABOVE) -> None:
        self.sessions = sessions
        self.service = service
        self.active_keys = active_keys
        self.idle_every = idle_every
        self.clock = clock
        self.full_every = full_every
        self.child_above = child_above
        self._last_wall_ms: int | None = None
        self._last_full: float | None = None
        self._seen_login_id = 0  # every login up to this id was looked at by an earlier pass
        self._next_idle_read = 0.0
        self.last_idle_read_s: float | None = None

    def sweep(self, active: Container[tuple[str, str]] | None = None) -> SweepReport:
        """One pass; the first one (at the gate's start) also looks at every unclosed login ever.

        The idle set is read every `idle_every` seconds, or every 10 reads' worth of time when
        one read takes longer (about 0.5 s at 100,000 devices): the gate must not spend its
        time listing sets. `active` is an idle set read just before (the gate's start)."""
        report = SweepReport()
        t0 = self.clock()
        ledger = self.sessions.ledger
        wall_ms = ledger.now_ms()
        full = self._last_full is None or t0 - self._last_full >= self.full_every
        index = self.service.snapshot()
        idle_keys: set[tuple[str, str]] | None = None
        if active is not None:
            idle_keys = {(m, e.ip) for m, e in index.items() if (m, e.ip) not in active}
        elif t0 >= self._next_idle_read:
            read_at = time.time()
            idle_keys = idle_among(((m, e.ip) for m, e in index.items()), self.active_keys, self.child_above)
            self.last_idle_read_s = self.clock() - t0
            self.service.last_idle_read = read_at  # when the read started: what it saw is at least this fresh
            self._next_idle_read = t0 + max(self.idle_every, 10 * self.last_idle_read_s)
        since = None if self._last_wall_ms is None else self._last_wall_ms - 60_000
        seen_up_to = last_login_id(ledger)  # read before the rows: a login committed meanwhile is read again next time
        if full:
            unclosed = unclosed_logins(ledger, expired_since_ms=since)
        else:
            unclosed = unclosed_logins(ledger, expired_since_ms=since, newer_than_id=self._seen_login_id,
                                       expired_until_ms=wall_ms)

        now = self.clock()
        expired = [(m, e) for m, e in index.items() if e.until <= now]
        idle = [] if idle_keys is None else [(m, e) for m, e in index.items()
                                             if e.until > now and (m, e.ip) in idle_keys and e.since < t0]
        timed_out = [r for r in unclosed if r["expires_ms"] <= wall_ms]
        by_mac: dict[str, list[dict]] = {}
        for row in unclosed:
            if row["expires_ms"] > wall_ms:
                by_mac.setdefault(row["mac"], []).append(row)
        # Devices whose live logins the index does not back one to one; the rest agree. Between
        # full passes `by_mac` holds only new logins, so each of their devices is settled from
        # all its live logins (an older one may be a relogin's predecessor).
        unsettled = [m for m, rows in by_mac.items()
                     if not full or len(rows) > 1 or m not in index or index[m].ip != rows[0]["ip"]]
        orphans = [m for m in index if m not in by_mac] if full else []
        # Intents since the last pass (at start: within the longest session), still open.
        intent_floor = wall_ms - 8 * 86400 * 1000 if self._last_wall_ms is None else self._last_wall_ms - 60_000
        intents = [e for e in events_since(ledger, "session_ending", intent_floor)
                   if unclosed_ids(ledger, e["detail"].get("login_ids", []))]

        with self.sessions.admission_lock():
            for event in intents:
                self._finish_end(event, report)
            for mac, entry in expired:
                if self.service.forget(mac, entry):
                    self._close_live(mac, "session_timeout", report)
            for mac, entry in idle:
                if self.service.entry(mac) == entry:
                    self.service.revoke(mac)
                    if not self._close_live(mac, "idle", report):
                        log_event(ledger, "reconcile_removed", mac, ip=entry.ip, reason="no live login in the ledger")
                        report.removed += 1
            for row in timed_out:
                if self.sessions.close_ended(row, "session_timeout"):
                    report.add("session_timeout")
            for mac in unsettled:
                self._settle_device(mac, report)
            for mac in orphans:
                entry = self.service.entry(mac)
                if entry is not None and not live_logins_of(ledger, mac=mac):
                    self.service.revoke(mac)
                    log_event(ledger, "reconcile_removed", mac, ip=entry.ip, reason="no live login in the ledger")
                    report.removed += 1
        self._last_wall_ms = wall_ms
        self._seen_login_id = seen_up_to
        if full:
            self._last_full = t0
        self.service.last_sweep = time.time()
        report.seconds = round(self.clock() - t0, 3)
        if report.closed or report.removed:
            log.info("sweep: closed %s, removed %d kernel element(s) in %.3f s", report.closed, report.removed,
                     report.seconds)
        return report

    def _finish_end(self, event: dict, report: SweepReport) -> None:
        """Complete an end whose process died between its intent and its logout rows."""
        ledger = self.sessions.ledger
        open_ids = unclosed_ids(ledger, event["detail"].get("login_ids", []))  # again, under the lock
        if not open_ids:
            return
        mac, reason = event["subject"], event["detail"].get("reason", "kernel_lost")
        held = self.service.entry(mac)
        newer = [r for r in live_logins_of(ledger, mac=mac) if r["id"] not in open_ids]
        if held is not None and not newer:
            self.service.revoke(mac)  # the intent's login is what the kernel holds: shut it now
        for login_id in open_ids:
            if self.sessions.close_ended({"id": login_id, "mac": mac}, reason, by="reconcile", intent=event["id"]):
                report.add(reason)

    def _close_live(self, mac: str, reason: str, report: SweepReport) -> int:
        closed = 0
        for row in live_logins_of(self.sessions.ledger, mac=mac):
            if self.sessions.close_ended(row, reason):
                report.add(reason)
                closed += 1
        return closed

    def _settle_device(self, mac: str, report: SweepReport) -> None:
        """Close the unclosed logins of one device that the kernel does not back (under the lock)."""
        ledger = self.sessions.ledger
        entry: Entry | None = self.service.entry(mac)
        held_ip = entry.ip if entry is not None and entry.until > self.clock() else None
        rows = live_logins_of(ledger, mac=mac)  # newest first, re-read under the lock
        current = next((r for r in rows if r["ip"] == held_ip), None)
        for row in rows:
            if row is current:
                continue
            if current is not None and (row["at_ms"], row["id"]) < (current["at_ms"], current["id"]):
                reason = "relogin"
            else:
                reason = self._reason_for_missing(row)
            if self.sessions.close_ended(row, reason, by="reconcile"):
                report.add(reason)

    def _reason_for_missing(self, row: dict) -> str:
        ledger = self.sessions.ledger
        for event in events_of(ledger, row["mac"], "session_ending", since_ms=row["at_ms"]):
            if row["id"] in event["detail"].get("login_ids", []):
                return event["detail"].get("reason", "kernel_lost")
        if any(e["detail"].get("login_id") == row["id"]
               for e in events_of(ledger, row["mac"], "session_admitted", since_ms=row["at_ms"])):
            return "kernel_lost"
        return "not_admitted"
