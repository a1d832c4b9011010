"""The traffic-data ledger: SQLite (through sqlite-utils), append-only, owned by this package.

Other packages call the functions and dataclasses exported here; none of them touches the
tables directly.
"""
from ledger.db import Ledger, LedgerError, open_ledger
from ledger.records import LeaseEvent, Login

__all__ = ["Ledger", "LedgerError", "open_ledger", "LeaseEvent", "Login"]
