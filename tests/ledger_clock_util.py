"""A settable clock for ledger tests: `open_ledger(..., clock)` calls it for seconds, tests set `.ms`."""
from __future__ import annotations


class Clock:
    """Returns `ms / 1000`; tests move time by assigning `ms` (Unix milliseconds)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000
