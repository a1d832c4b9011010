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
    terms_version: str = ""
    oa_consent: bool = False
    next_path: str = ""


class AttemptStore:
    """SQLite-backed store shared by all gunicorn workers of the portal."""

    def __init__(self, path: Path, clock=time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 30000")
        # A table name of its own per layout: a file left by an older portal is simply ignored.
        self._conn.execute("""CREATE TABLE IF NOT EXISTS login_attempts (
            state TEXT PRIMARY KEY, nonce TEXT NOT NULL, code_verifier TEXT NOT NULL,
            client_ip TEXT NOT NULL, lang TEXT NOT NULL, created REAL NOT NULL,
            terms_version TEXT NOT NULL, oa_consent INTEGER NOT NULL, next_path TEXT NOT NULL, used REAL)""")
        self._clock = clock
        self._lock = threading.Lock()

    def start(self, attempt: Attempt) -> None:
        """Remember a new attempt (and forget expired ones)."""
        with self._lock:
            self._conn.execute("DELETE FROM login_attempts WHERE created < ?",
                               [self._clock() - 2 * ATTEMPT_TTL_SECONDS])
            self._conn.execute("INSERT INTO login_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                               [attempt.state, attempt.nonce, attempt.code_verifier, attempt.client_ip,
                                attempt.lang, attempt.created, attempt.terms_version, int(attempt.oa_consent),
                                attempt.next_path])

    def claim(self, state: str, client_ip: str, same_browser: bool) -> tuple[Attempt | None, str]:
        """Claim the attempt for `state` for the device asking, exactly once.

        Only its own browser (`same_browser`: the state is in that browser's session) or its own
        device (the address that started it) may spend it. A request from another device is
        refused and leaves the attempt usable by its owner: whoever sees the callback URL
        cannot cancel someone else's login. Returns (attempt, "") or (None, why) with why in
        "other_device", "unknown_or_used"."""
        now = self._clock()
        with self._lock:
            row = self._conn.execute(
                "UPDATE login_attempts SET used = ? WHERE state = ? AND used IS NULL AND created >= ? "
                "AND (? OR client_ip = ?) "
                "RETURNING state, nonce, code_verifier, client_ip, lang, created, terms_version, oa_consent, "
                "next_path", [now, state, now - ATTEMPT_TTL_SECONDS, int(same_browser), client_ip]).fetchone()
            if row is None:
                other = self._conn.execute(
                    "SELECT 1 FROM login_attempts WHERE state = ? AND used IS NULL AND created >= ?",
                    [state, now - ATTEMPT_TTL_SECONDS]).fetchone()
                return None, "other_device" if other else "unknown_or_used"
        return self._attempt(row), ""

    @staticmethod
    def _attempt(row) -> Attempt:
        return Attempt(
            state=row[0], nonce=row[1], code_verifier=row[2], client_ip=row[3], lang=row[4], created=row[5],
            terms_version=row[6], oa_consent=bool(row[7]), next_path=row[8])

    def take(self, state: str) -> Attempt | None:
        """Claim the attempt for `state` exactly once; None if unknown, used or expired."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE login_attempts SET used = ? WHERE state = ? AND used IS NULL AND created >= ? "
                "RETURNING state, nonce, code_verifier, client_ip, lang, created, terms_version, oa_consent, "
                "next_path", [self._clock(), state, self._clock() - ATTEMPT_TTL_SECONDS])
            row = cur.fetchone()
        if not row:
            return None
        return self._attempt(row)
