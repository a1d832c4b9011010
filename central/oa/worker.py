"""The OA worker: one daemon thread that handles the inbox, sends the outbox, and on its own
clock runs reminders and WiFi check-ins. Everything it works from is in SQLite, so a restart
picks up where the last process stopped."""
from __future__ import annotations

import logging
import threading
import time

from central.oa.service import Oa

log = logging.getLogger("central.oa")


class Worker:
    """Start with `start()`, stop with `stop()`; `run_once()` does one round (tests, CLI)."""

    def __init__(self, oa: Oa, poll_s: float, periodic_s: float) -> None:
        self.oa, self.poll_s, self.periodic_s = oa, poll_s, periodic_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_periodic = 0.0

    def run_once(self, periodic: bool = False) -> int:
        n = self.oa.process_inbox()
        if periodic:
            n += self.oa.send_reminders() + self.oa.wifi_checkins() + self.oa.send_due_broadcasts()
            if self.oa.store is not None:
                from central.oa.synced import import_portal_consents
                n += import_portal_consents(self.oa, self.oa.store)
        n += self.oa.flush_outbox() + self.oa.flush_narrowcasts()
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.oa.wake.clear()
            try:
                due = time.monotonic() - self._last_periodic >= self.periodic_s
                if due:
                    self._last_periodic = time.monotonic()
                busy = self.run_once(periodic=due)
            except Exception:  # keep serving; the rows stay pending and are retried
                log.exception("OA worker round failed")
                busy = 0
            if not busy:
                self.oa.wake.wait(self.poll_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="oa-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.oa.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
