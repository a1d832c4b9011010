"""The side effects the portal needs, gathered in one object passed to the app factory.

Production builds it from the config (kernel gate, ledger on disk, LINE's servers); tests
pass the same real parts inside a namespace, or an in-memory gate where no kernel exists.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ledger.db import Ledger
from lineapi.client import LineLogin
from netcfg.gate import Gate
from portal.attempts import AttemptStore
from sessions import SessionManager


@dataclass
class PortalServices:
    """Everything with a side effect, for one portal process.

    `gate` answers "is this device let through" (a GateClient in production); `sessions` lets
    devices in and out with their ledger rows (and, for an admin revoke, the RADIUS Disconnect).
    """

    gate: Gate
    ledger: Ledger
    line: LineLogin
    attempts: AttemptStore
    sessions: SessionManager
    clock: Callable[[], float] = field(default=time.time)
    started: float = field(default_factory=time.time)
