"""Opening the ledger database and bringing its schema up to date."""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import sqlite_utils

MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class LedgerError(Exception):
    """The ledger cannot be opened or written; the message says why and what to do."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration shipped in ledger/migrations, in order."""
    found = []
    for entry in resources.files("ledger").joinpath("migrations").iterdir():
        m = MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise LedgerError(f"two migrations share a number: {[n for _, n, _ in found]}")
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the file's user_version, each in its own transaction.

    Several processes may open a new ledger at once (gunicorn workers, the lease hook), so the
    version is read again inside the write lock before each migration is applied.
    """
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, name, sql in migrations():
        if version <= current:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if version <= current:
                conn.execute("COMMIT")  # another process applied it while we waited
                continue
            # executescript would commit the open transaction first; run statements one by one.
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LedgerError(f"migration {name} failed: {exc}") from exc
        current = version
    return current


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements, buf = [], []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        buf.append(line)
        joined = "\n".join(buf)
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            buf = []
    if buf:
        raise LedgerError("a migration ends with an unfinished statement")
    return statements


@dataclass
class Ledger:
    """An open ledger: one per process, passed to whoever records or reads."""

    db: sqlite_utils.Database
    path: Path
    box_id: str
    clock: Callable[[], float] = field(default=time.time)

    def now_ms(self) -> int:
        """The ledger's clock in integer Unix milliseconds (tests pass their own clock)."""
        return int(self.clock() * 1000)

    def close(self) -> None:
        """Close the connection (WAL content stays durable)."""
        self.db.conn.close()


def open_ledger(path: str | Path, box_id: str, clock: Callable[[], float] = time.time) -> Ledger:
    """Open (creating if needed) the ledger at `path`, in WAL mode, migrated to the newest schema."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        db = sqlite_utils.Database(conn)
        db.enable_wal()
        # NORMAL in WAL mode survives a process crash; only power loss can lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc}. Fix: check the disk and the "
                          "permissions of box.data_dir") from exc
    except OSError as exc:
        raise LedgerError(f"{path}: cannot create the ledger directory: {exc.strerror}") from exc
    return Ledger(db=db, path=path, box_id=box_id, clock=clock)
