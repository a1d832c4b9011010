"""Times on the admin pages: shown in Asia/Bangkok with UTC beside; typed in either."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

BANGKOK = ZoneInfo("Asia/Bangkok")
ZONES = {"Asia/Bangkok": BANGKOK, "UTC": dt.timezone.utc}
_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def bangkok(ms: int | None) -> str:
    """'2026-09-21 17:03:00.123' in Bangkok time ('' for None)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, BANGKOK).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def utc(ms: int | None) -> str:
    """'2026-09-21 10:03:00.123Z' ('' for None)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def iso(ms: int | None) -> str:
    """Unix ms as ISO-8601 UTC with milliseconds, as the box's exports write it ('' for None)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str, zone: str) -> int:
    """Unix ms from a typed or pasted time.

    Accepts ISO 8601 with an offset or Z (the offset wins), or 'YYYY-MM-DD HH:MM[:SS[.fff]]' (also
    with 'T'), read in `zone` (Asia/Bangkok or UTC). Raises ValueError saying what is accepted.
    """
    if zone not in ZONES:
        raise ValueError(f"unknown time zone {zone!r}: choose Asia/Bangkok or UTC")
    s = (text or "").strip().replace("T", " ")
    if not s:
        raise ValueError("a time is required")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        when = None
        for fmt in _FORMATS:
            try:
                when = dt.datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
        if when is None:
            raise ValueError(f"cannot read the time {text!r}: write YYYY-MM-DD HH:MM:SS, "
                             "or ISO 8601 with an offset such as 2026-09-21T10:03:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZONES[zone])
    return int(when.timestamp() * 1000)
