"""What the admin pages need from the centre, gathered in one place at start (init_admin).

This is the only file that knows the names centre core gives its config and services; the pages
ask `ctx()` for a database connection, the store, the box list, the signing key and the time.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app

from central.admin.settings import AdminSettings

EXTENSION = "central_admin"


@dataclass
class AdminContext:
    """The admin pages' view of the centre."""

    connect: Callable[[], sqlite3.Connection]
    store: Any                      # central.store.Store: attribute, sessions_for_user, export_rows
    settings: AdminSettings
    key: Ed25519PrivateKey          # signs exports
    data_dir: Path
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    services: Any = None

    def now_ms(self) -> int:
        """Unix milliseconds now (the injected clock in tests)."""
        return self.clock()

    def boxes(self, conn: sqlite3.Connection) -> list[dict]:
        """Every enrolled box as a dict (box_id, office, last_seen_ms, lag, version, health, public_address)."""
        appdb = getattr(self.services, "appdb", None)
        if appdb is not None and callable(getattr(appdb, "list_boxes", None)):
            return [dict(b) for b in appdb.list_boxes()]
        cur = conn.execute("SELECT * FROM boxes ORDER BY box_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur]

    def alerts(self, limit: int = 20) -> list[dict]:
        """The newest alerts the box API raised (bad chain, bad hash, unknown box, ...), newest first."""
        fn = getattr(getattr(self.services, "appdb", None), "alerts", None)
        return list(fn(limit)) if callable(fn) else []

    def chain_head(self, box_id: str, end_ms: int) -> dict | None:
        """The first batch accepted from this box that reaches the window's end (else its newest),
        for the export manifest; None when the centre has no batch from it."""
        fn = getattr(getattr(self.services, "appdb", None), "chain_head", None)
        return fn(box_id, end_ms) if callable(fn) else None


def ctx() -> AdminContext:
    """The admin context of the running app."""
    return current_app.extensions[EXTENSION]


def db() -> sqlite3.Connection:
    """The app-data connection of this thread (AppDB keeps one per thread, autocommit)."""
    return ctx().connect()
