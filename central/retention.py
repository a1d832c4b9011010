"""Retention at the centre: whole day partitions, counted from the end of the session.

Every retained table is partitioned by the Bangkok day of its row's END time (a flow's end,
a login's expiry, a lease's expiry, ...). A day partition is dropped once the whole day lies
more than `days` (90 by default, the law's floor) before now, unless a case keeps it longer
(up to 2 years) or a legal hold covers it: `appdb.held_ranges(now)` (central/cases.py) names
those slices, and any partition overlapping one is kept whole (partitions are per day, not
per box). Every run is recorded in the app database.
"""
from __future__ import annotations

import datetime as dt

from central.appdb import AppDB
from central.store import DAY_MS, Store

BKK = dt.timezone(dt.timedelta(hours=7))
LEGAL_FLOOR_DAYS = 90


def day_bounds(partition_id: str) -> tuple[int, int]:
    """[start, end) of a YYYYMMDD Bangkok day in Unix ms."""
    d = dt.datetime.strptime(partition_id, "%Y%m%d").replace(tzinfo=BKK)
    start = int(d.timestamp() * 1000)
    return start, start + DAY_MS


def run(store: Store, appdb: AppDB, now_ms: int, days: int = 90, dry_run: bool = False) -> dict:
    """Drop every day partition past retention and not held; returns what was dropped and kept."""
    if days < LEGAL_FLOOR_DAYS:
        raise ValueError(f"retention of {days} days is below the legal floor of {LEGAL_FLOOR_DAYS}")
    cutoff = now_ms - days * DAY_MS
    holds = appdb.held_ranges(now_ms)
    dropped: dict[str, list[str]] = {}
    kept: dict[str, list[str]] = {}
    for table, parts in store.partitions().items():
        for pid in parts:
            start, end = day_bounds(pid)
            if end > cutoff:
                continue
            if any(h.start_ms < end and h.end_ms >= start for h in holds):
                kept.setdefault(table, []).append(pid)
                continue
            if not dry_run:
                store.drop_partition(table, pid)
            dropped.setdefault(table, []).append(pid)
    if not dry_run:
        appdb.record_retention(now_ms, cutoff, dropped, kept)
    return {"cutoff_ms": cutoff, "dropped": dropped, "kept_for_holds": kept, "dry_run": dry_run}
