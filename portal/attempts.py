"""Login attempts kept on the server, keyed by `state`.

A cookie alone is not enough: the captive mini-browser may lose it, and a login started
there may finish in the real browser. So each attempt lives here with the client it was
started for; the cookie only binds it to the browser that started it.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ATTEMPT_TTL_SECONDS = 600  # LINE's authorization code lives 10 minutes; so does our attempt


@dataclass(frozen=True)
class Attempt:
    """One LINE login attempt started by a client."""

    state: str
    nonce: str
    code_verifier: str
    client_ip: str
    lang: str
    created: float


class AttemptStore:
    """SQLite-backed store shared by all gunicorn workers of the portal."""

    def __init__(self, path: Path, clock=time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("""CREATE TABLE IF NOT EXISTS attempts (
            state TEXT PRIMARY KEY, nonce TEXT NOT NULL, code_verifier TEXT NOT NULL,
            client_ip TEXT NOT NULL, lang TEXT NOT NULL, created REAL NOT NULL, used REAL)""")
        self._clock = clock
        self._lock = threading.Lock()

    def start(self, attempt: Attempt) -> None:
        """Remember a new attempt (and forget expired ones)."""
        with self._lock:
            self._conn.execute("DELETE FROM attempts WHERE created < ?", [self._clock() - 2 * ATTEMPT_TTL_SECONDS])
            self._conn.execute("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, NULL)",
                               [attempt.state, attempt.nonce, attempt.code_verifier, attempt.client_ip,
                                attempt.lang, attempt.created])

    def take(self, state: str) -> Attempt | None:
        """Claim the attempt for `state` exactly once; None if unknown, used or expired."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE attempts SET used = ? WHERE state = ? AND used IS NULL AND created >= ? "
                "RETURNING state, nonce, code_verifier, client_ip, lang, created",
                [self._clock(), state, self._clock() - ATTEMPT_TTL_SECONDS])
            row = cur.fetchone()
        return Attempt(*row) if row else None
