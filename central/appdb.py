"""The centre's app data in SQLite: boxes, enrolment codes, batches received, alerts, nonces,
push-down config (migrations 0xx) and the admin side's accounts, cases and audit (1xx).

One file, WAL mode; one connection per thread (`connect()`), because gunicorn runs request
threads in one process. Migrations are numbered files central/migrations/NNN_name.sql applied
once each, in number order, recorded in `schema_migrations`.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
GENESIS = "0" * 64


class AppDBError(Exception):
    """The app database cannot be opened or migrated; the message says what to do."""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """(number, path) of every migration, sorted; two files with one number is an error."""
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := MIGRATION_NAME.match(p.name)))
    nums = [n for n, _ in found]
    if len(nums) != len(set(nums)):
        raise AppDBError(f"two central migrations share a number: {[p.name for _, p in found]}")
    return found


@dataclass(frozen=True)
class HeldRange:
    """A slice retention must keep: box (None: all), session-end window, until (None: legal hold)."""

    box_id: str | None
    start_ms: int
    end_ms: int
    until_ms: int | None


class AppDB:
    """The app database: a path, per-thread connections and the core's queries."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        # Concurrent uploads of one box must see each other's last_seq (SQLite's lock alone would
        # let both read the old value): one lock per box, see box_lock().
        self.batch_lock = threading.Lock()   # enrolment (codes, new boxes)
        self._box_locks: dict[str, threading.Lock] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migrate()
        except (sqlite3.Error, OSError) as exc:
            raise AppDBError(f"{self.path}: cannot open the centre's app database: {exc}. "
                             "Fix: check data_dir's disk and permissions") from exc

    def box_lock(self, box_id: str) -> threading.Lock:
        """The lock serialising one box's uploads (chain check + store + record); boxes do not wait
        for each other (with a ClickHouse server their inserts run in parallel)."""
        with self.batch_lock:
            return self._box_locks.setdefault(box_id, threading.Lock())

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use `with tx(conn)` for transactions)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: an acknowledged batch must survive power loss (the box deletes after the ack).
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """Same as connect() (for code that reads an attribute)."""
        return self.connect()

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        conn = self.connect()
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_ms INTEGER NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for num, path in migration_files():
            if num in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (num,)).fetchone() is None:
                    for stmt in _statements(path.read_text(encoding="utf-8")):
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, CAST(strftime('%s','now') AS INTEGER) * 1000)",
                                 (num, path.name))
                    applied.append(path.name)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return applied

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- enrolment codes -------------------------------------------------------------
    def new_enrol_code(self, created_by: str, now_ms: int, valid_ms: int, box_id: str | None = None) -> str:
        """Make a one-time enrolment code (shown once; only its hash is kept)."""
        if not created_by.strip():
            raise ValueError("an enrolment code needs the name of the admin who made it")
        code = "-".join(secrets.token_hex(3) for _ in range(4))
        self.connect().execute("INSERT INTO enrol_codes (code_hash, box_id, created_ms, created_by, expires_ms) "
                               "VALUES (?, ?, ?, ?, ?)", (_code_hash(code), box_id, now_ms, created_by, now_ms + valid_ms))
        return code

    # ---- boxes -------------------------------------------------------------------------
    def box(self, box_id: str) -> dict | None:
        """One box's registry row, or None."""
        return _one(self.connect(), "SELECT * FROM boxes WHERE box_id = ?", (box_id,))

    def list_boxes(self) -> list[dict]:
        """Every box with last seen, lag, version, health (JSON decoded), newest contact first."""
        out = []
        for r in _all(self.connect(), "SELECT * FROM boxes ORDER BY box_id"):
            for k in ("health", "lag"):
                r[k] = json.loads(r[k]) if r[k] else {}
            out.append(r)
        return out

    def alert(self, kind: str, detail: str, box_id: str | None, now_ms: int) -> None:
        """Raise an alert (bad chain, bad hash, tampered batch, ...) for central admins."""
        self.connect().execute("INSERT INTO alerts (at_ms, box_id, kind, detail) VALUES (?, ?, ?, ?)",
                               (now_ms, box_id, kind, detail))

    def alerts(self, limit: int = 200) -> list[dict]:
        """Newest alerts first."""
        return _all(self.connect(), "SELECT * FROM alerts ORDER BY id DESC LIMIT ?", (limit,))

    def batches(self, box_id: str) -> list[dict]:
        """Accepted batches of a box in seq order."""
        return _all(self.connect(), "SELECT * FROM batches WHERE box_id = ? ORDER BY seq", (box_id,))

    def chain_head(self, box_id: str, end_ms: int | None = None) -> dict | None:
        """The newest accepted batch of a box (seq, hash, received_ms); with end_ms, the first batch
        whose records reach end_ms or later (so it covers a window ending then), else the newest."""
        conn = self.connect()
        if end_ms is not None:
            r = _one(conn, "SELECT seq, hash, received_ms FROM batches WHERE box_id = ? AND max_ms >= ? "
                           "ORDER BY seq LIMIT 1", (box_id, end_ms))
            if r:
                return r
        return _one(conn, "SELECT seq, hash, received_ms FROM batches WHERE box_id = ? ORDER BY seq DESC LIMIT 1",
                    (box_id,))

    def check_nonce(self, box_id: str, nonce: str, now_ms: int, window_ms: int) -> bool:
        """Remember a nonce; False if it was already seen within the window (a replay)."""
        conn = self.connect()
        conn.execute("DELETE FROM request_nonces WHERE at_ms < ?", (now_ms - 2 * window_ms,))
        try:
            conn.execute("INSERT INTO request_nonces VALUES (?, ?, ?)", (box_id, nonce, now_ms))
            return True
        except sqlite3.IntegrityError:
            return False

    # ---- push-down config --------------------------------------------------------------
    def push_config(self) -> dict:
        """What boxes fetch: config_version, terms_version, blocklist."""
        r = _one(self.connect(), "SELECT version, terms_version, blocklist FROM push_config WHERE id = 1")
        if r is None:
            return {"config_version": 0, "terms_version": None, "blocklist": []}
        return {"config_version": r["version"], "terms_version": r["terms_version"], "blocklist": json.loads(r["blocklist"])}

    def set_push_config(self, terms_version: str | None, blocklist: list[dict], now_ms: int) -> int:
        """Replace the push-down config; bumps its version when it changed. Returns the version."""
        cur = self.push_config()
        if cur["terms_version"] == terms_version and cur["blocklist"] == blocklist:
            return cur["config_version"]
        version = cur["config_version"] + 1
        self.connect().execute("INSERT OR REPLACE INTO push_config (id, version, terms_version, blocklist, updated_ms) "
                               "VALUES (1, ?, ?, ?, ?)", (version, terms_version, json.dumps(blocklist), now_ms))
        return version

    # ---- retention -----------------------------------------------------------------------
    def held_ranges(self, now_ms: int) -> list[HeldRange]:
        """Slices retention must keep (cases' longer retention and legal holds), from central.cases."""
        try:
            from central import cases
        except ImportError:  # the admin side not installed: no cases, nothing held
            return []
        if _one(self.connect(), "SELECT name FROM sqlite_master WHERE name = 'case_ranges'") is None:
            return []
        return [HeldRange(h.box_id, h.start_ms, h.end_ms, h.until_ms) for h in cases.held_ranges(self.connect(), now_ms)]

    def record_retention(self, now_ms: int, cutoff_ms: int, dropped: dict, kept: dict) -> None:
        """Log one retention run."""
        self.connect().execute("INSERT INTO retention_runs (at_ms, cutoff_ms, dropped, kept_for_holds) VALUES (?, ?, ?, ?)",
                               (now_ms, cutoff_ms, json.dumps(dropped), json.dumps(kept)))


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def _one(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> dict | None:
    cur = conn.execute(sql, args)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def _all(conn: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _statements(script: str) -> list[str]:
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        joined = "\n".join(buf)
        if sqlite3.complete_statement(joined):
            if joined.strip():
                out.append(joined)
            buf = []
    if "\n".join(buf).strip().strip(";").strip() and not all(l.strip().startswith("--") or not l.strip() for l in buf):
        raise AppDBError("a central migration ends with an unfinished statement")
    return out
