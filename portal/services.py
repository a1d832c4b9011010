"""The side effects the portal needs, gathered in one object passed to the app factory.

Production builds it from the config (kernel gate, ledger on disk, LINE's servers); tests
pass the same real parts inside a namespace, or an in-memory gate where no kernel exists.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ledger.db import Ledger
from lineapi.client import LineLogin
from netcfg.gate import Gate
from portal.attempts import AttemptStore


@dataclass
class PortalServices:
    """Everything with a side effect, for one portal process.

    `disconnect(mac)` asks the access point to drop a station (RADIUS DAS,
    radius.das.disconnect); None when DAS is not configured.
    """

    gate: Gate
    ledger: Ledger
    line: LineLogin
    attempts: AttemptStore
    clock: Callable[[], float] = field(default=time.time)
    disconnect: Callable[[str], Any] | None = None
    started: float = field(default_factory=time.time)
