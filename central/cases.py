"""Cases: the official request (police letter, court order) an investigator works under.

A case has a reference (the request's own number), the authority that asked, and slices of data it
keeps: one box or every box, a window of session/flow end times. Each slice keeps its data past
the normal 90 days until keep_until_ms, which may be at most 2 years after the slice's end (CCA s.26
as amended in 2560). A legal hold on a slice keeps it from deletion until the hold is released,
whatever the date. The retention job asks held_ranges() what it must not delete.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from central.audit import tx

DAY_MS = 86_400_000
MAX_KEEP_MS = 730 * DAY_MS   # 2 years, counted from the end of the slice's data
REF_RE = re.compile(r"^[\w./:#() -]{3,80}$", re.UNICODE)


class CaseError(ValueError):
    """A case request that cannot be done; the message says why and how to fix it."""


@dataclass(frozen=True)
class Case:
    """A case as listed."""

    id: int
    reference: str
    authority: str
    note: str
    created_ms: int
    created_by: str
    closed_ms: int | None


@dataclass(frozen=True)
class Range:
    """One slice a case keeps."""

    id: int
    case_id: int
    box_id: str | None
    start_ms: int
    end_ms: int
    keep_until_ms: int
    hold: bool
    created_by: str
    released_ms: int | None


@dataclass(frozen=True)
class HeldRange:
    """Data the retention job must not delete: box (None = every box), window of end times, until
    (None = legal hold, until released)."""

    box_id: str | None
    start_ms: int
    end_ms: int
    until_ms: int | None


def check_reference(ref: str) -> str:
    """A case reference, trimmed; CaseError if empty or with odd characters."""
    ref = (ref or "").strip()
    if not REF_RE.match(ref):
        raise CaseError("a case reference is 3-80 letters, digits, spaces or . / : # ( ) - _ "
                        "(for example the police letter's number)")
    return ref


_CASE_COLS = "id, reference, authority, note, created_ms, created_by, closed_ms"
_RANGE_COLS = "id, case_id, box_id, start_ms, end_ms, keep_until_ms, hold, created_by, released_ms"


def open_case(conn: sqlite3.Connection, reference: str, authority: str, note: str, by: str, now_ms: int) -> Case:
    """Register a case. The reference must be new."""
    reference = check_reference(reference)
    if not authority.strip():
        raise CaseError("name the authority that asked (police station, court)")
    try:
        with tx(conn):
            cur = conn.execute("INSERT INTO cases (reference, authority, note, created_ms, created_by)"
                               " VALUES (?, ?, ?, ?, ?)", (reference, authority.strip(), note.strip(), now_ms, by))
    except sqlite3.IntegrityError:
        raise CaseError(f"a case {reference!r} exists already") from None
    return get(conn, cur.lastrowid)  # type: ignore[return-value]


def get(conn: sqlite3.Connection, case_id: int) -> Case | None:
    """The case with this id, or None."""
    r = conn.execute(f"SELECT {_CASE_COLS} FROM cases WHERE id = ?", (case_id,)).fetchone()
    return None if r is None else Case(*r)


def by_reference(conn: sqlite3.Connection, reference: str) -> Case | None:
    """The case with this reference, or None."""
    r = conn.execute(f"SELECT {_CASE_COLS} FROM cases WHERE reference = ?", ((reference or "").strip(),)).fetchone()
    return None if r is None else Case(*r)


def require_open(conn: sqlite3.Connection, reference: str) -> Case:
    """The open case with this reference; CaseError saying what to do otherwise."""
    if not (reference or "").strip():
        raise CaseError("a case reference is required for this search or export")
    case = by_reference(conn, reference)
    if case is None:
        raise CaseError(f"no case {reference.strip()!r}: open the case first (Cases page)")
    if case.closed_ms is not None:
        raise CaseError(f"case {case.reference!r} is closed")
    return case


def all_cases(conn: sqlite3.Connection) -> list[Case]:
    """Every case, newest first."""
    return [Case(*r) for r in conn.execute(f"SELECT {_CASE_COLS} FROM cases ORDER BY id DESC")]


def close_case(conn: sqlite3.Connection, case_id: int, now_ms: int) -> None:
    """Close a case (no more searches under it). Its slices keep their dates and holds."""
    with tx(conn):
        conn.execute("UPDATE cases SET closed_ms = ? WHERE id = ? AND closed_ms IS NULL", (now_ms, case_id))


def add_range(conn: sqlite3.Connection, case_id: int, box_id: str | None, start_ms: int, end_ms: int,
              keep_until_ms: int, hold: bool, by: str, now_ms: int) -> Range:
    """Keep a slice for a case: until keep_until_ms (at most 2 years after end_ms), and with hold=True
    until the hold is released."""
    if get(conn, case_id) is None:
        raise CaseError("no such case")
    if end_ms < start_ms:
        raise CaseError("the window ends before it starts")
    if keep_until_ms > end_ms + MAX_KEEP_MS:
        raise CaseError("retention can be extended to at most 2 years after the end of the data "
                        "(CCA s.26); for longer, set a legal hold")
    if keep_until_ms < now_ms and not hold:
        raise CaseError("the keep-until date is in the past")
    with tx(conn):
        cur = conn.execute("INSERT INTO case_ranges (case_id, box_id, start_ms, end_ms, keep_until_ms, hold,"
                           " created_ms, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (case_id, box_id or None, start_ms, end_ms, keep_until_ms, int(hold), now_ms, by))
    return ranges(conn, case_id, only_id=cur.lastrowid)[0]


def release_hold(conn: sqlite3.Connection, range_id: int, by: str, now_ms: int) -> None:
    """End a legal hold; the slice then keeps only its keep-until date."""
    with tx(conn):
        conn.execute("UPDATE case_ranges SET hold = 0, released_ms = ?, released_by = ? WHERE id = ? AND hold = 1",
                     (now_ms, by, range_id))


def ranges(conn: sqlite3.Connection, case_id: int, only_id: int | None = None) -> list[Range]:
    """The slices of a case."""
    sql = f"SELECT {_RANGE_COLS} FROM case_ranges WHERE case_id = ?" + (" AND id = ?" if only_id else "") + " ORDER BY id"
    return [Range(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8])
            for r in conn.execute(sql, (case_id, only_id) if only_id else (case_id,))]


def held_ranges(conn: sqlite3.Connection, now_ms: int) -> list[HeldRange]:
    """What the retention job must not delete now: every slice on legal hold (until None) and every
    slice whose keep-until date is still ahead."""
    out = []
    for box, start, end, until, hold in conn.execute(
            "SELECT box_id, start_ms, end_ms, keep_until_ms, hold FROM case_ranges WHERE hold = 1 OR keep_until_ms > ?"
            " ORDER BY start_ms", (now_ms,)):
        out.append(HeldRange(box, start, end, None if hold else until))
    return out
