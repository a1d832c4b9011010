"""Failed admin logins slow the next try, per source address and per admin name.

Kept in SQLite (like portal/attempts.py) so every gunicorn worker, and a restarted portal,
sees the same count: a guesser cannot spread tries over workers or wait for a restart.
After FREE_FAILURES failures within WINDOW_SECONDS, each further try must wait twice as long
as the last (1 s, 2 s, 4 s, ... capped at MAX_DELAY_SECONDS). A success clears the source's
and the name's count. Per name as well as per source: a guesser with many addresses still
meets the delay on the one name they attack; the cap keeps that from locking a real admin
out for longer than MAX_DELAY_SECONDS.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

FREE_FAILURES = 5
WINDOW_SECONDS = 3600.0
MAX_DELAY_SECONDS = 300.0


class LoginThrottle:
    """Failure counts by key ("ip:..." or "name:..."), shared through one SQLite file."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("""CREATE TABLE IF NOT EXISTS admin_login_failures (
            key TEXT PRIMARY KEY, failures INTEGER NOT NULL, first REAL NOT NULL, last REAL NOT NULL)""")
        self._clock = clock
        self._lock = threading.Lock()

    @staticmethod
    def keys(source: str, name: str) -> list[str]:
        """The counters one login try touches."""
        return [f"ip:{source}", f"name:{name[:64].lower()}"]

    def wait_seconds(self, keys: list[str]) -> float:
        """How long the caller must still wait before its next try may be checked (0: now)."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                row = self._conn.execute("SELECT failures, first, last FROM admin_login_failures WHERE key = ?",
                                         [key]).fetchone()
                if row is None or now - row[1] > WINDOW_SECONDS:
                    continue
                wait = max(wait, row[2] + delay_after(row[0]) - now)
        return max(0.0, wait)

    def failed(self, keys: list[str]) -> None:
        """Count one failure on every key (a count older than the window starts again)."""
        now = self._clock()
        with self._lock:
            # Counts older than the window mean nothing: forget them, so a spray of made-up
            # names cannot grow the file without bound.
            self._conn.execute("DELETE FROM admin_login_failures WHERE last < ?", [now - WINDOW_SECONDS])
            for key in keys:
                self._conn.execute(
                    """INSERT INTO admin_login_failures VALUES (?, 1, ?, ?)
                       ON CONFLICT (key) DO UPDATE SET
                         failures = CASE WHEN ? - first > ? THEN 1 ELSE failures + 1 END,
                         first = CASE WHEN ? - first > ? THEN ? ELSE first END,
                         last = ?""",
                    [key, now, now, now, WINDOW_SECONDS, now, WINDOW_SECONDS, now, now])

    def succeeded(self, keys: list[str]) -> None:
        """Forget the failures of these keys."""
        with self._lock:
            self._conn.executemany("DELETE FROM admin_login_failures WHERE key = ?", [[k] for k in keys])


def delay_after(failures: int) -> float:
    """Seconds the next try must wait after this many failures in a row."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY_SECONDS, 2.0 ** (failures - FREE_FAILURES))
