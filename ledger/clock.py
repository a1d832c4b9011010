"""The clock's state (from chrony) kept with the records, and lookups of it by time."""
from __future__ import annotations

import bisect
import subprocess
from dataclasses import dataclass

from ledger.db import Ledger

# The 2550 notification's clause 9: within 10 ms of the reference time.
MAX_OFFSET_US = 10_000
# A sample vouches for the clock this long after it was taken (the logger samples each minute).
SAMPLE_VALID_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class ClockSample:
    """One reading of chrony's tracking state."""

    synced: bool
    offset_us: int | None
    stratum: int | None
    source: str | None
    leap: str | None
    error: str | None = None


def parse_tracking(csv_line: str) -> ClockSample:
    """Parse `chronyc -c tracking` (one CSV line) into a sample."""
    parts = csv_line.strip().split(",")
    if len(parts) < 14:
        return ClockSample(False, None, None, None, None, f"unexpected chronyc output: {csv_line.strip()[:120]!r}")
    try:
        stratum = int(parts[2])
        offset_us = round(float(parts[4]) * 1e6)
    except ValueError:
        return ClockSample(False, None, None, None, None, f"unexpected chronyc output: {csv_line.strip()[:120]!r}")
    leap = parts[13]
    synced = leap != "Not synchronised" and 0 < stratum < 16 and parts[0] not in ("00000000", "0")
    return ClockSample(synced, offset_us, stratum, parts[1], leap)


def read_chrony(timeout: float = 5.0) -> ClockSample:
    """Ask chronyd; any failure is an unsynchronised sample that says why."""
    try:
        out = subprocess.run(["chronyc", "-c", "tracking"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ClockSample(False, None, None, None, None, f"chronyc failed: {exc}")
    if out.returncode != 0:
        return ClockSample(False, None, None, None, None, f"chronyc: {(out.stdout + out.stderr).strip()[:200]}")
    return parse_tracking(out.stdout)


def record_clock(ledger: Ledger, sample: ClockSample) -> int:
    """Append a clock sample taken now."""
    return ledger.db["clock_samples"].insert({
        "at_ms": ledger.now_ms(), "synced": int(sample.synced), "offset_us": sample.offset_us,
        "stratum": sample.stratum, "source": sample.source, "leap": sample.leap, "error": sample.error}).last_pk


class ClockHistory:
    """The clock samples around a window, to label any time as 'synced', 'unsynced' or 'unknown'."""

    def __init__(self, ledger: Ledger, start_ms: int, end_ms: int) -> None:
        rows = ledger.db.conn.execute(
            "SELECT at_ms, synced, offset_us FROM clock_samples WHERE at_ms BETWEEN ? AND ? ORDER BY at_ms",
            [start_ms - SAMPLE_VALID_MS, end_ms]).fetchall()
        self.at = [r[0] for r in rows]
        self.state = [bool(r[1]) and r[2] is not None and abs(r[2]) <= MAX_OFFSET_US for r in rows]

    def label(self, t_ms: int) -> str:
        """'synced' if the newest sample at or before t (within SAMPLE_VALID_MS) was synchronised."""
        i = bisect.bisect_right(self.at, t_ms) - 1
        if i < 0 or t_ms - self.at[i] > SAMPLE_VALID_MS:
            return "unknown"
        return "synced" if self.state[i] else "unsynced"
