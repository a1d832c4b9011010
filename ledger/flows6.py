"""IPv6 flows: stored as rows (no NAT, so the source address and port are the device's own),
each with the device's MAC from the box's neighbour table, and `who6` for an IPv6 address.

The flow logger (ledger.flowlog) routes IPv6 conntrack events here in the same transaction
as its IPv4 staging and heartbeat; the rows are sealed like every table, and readers see
only rows a seal already covers. The MAC is looked up by `Neighbours` when the row is
written (the NEW event comes with the first packet, before the box may have resolved the
device, so a miss is retried at the next flush); `who6` fills a DESTROY row's missing MAC
from its NEW row and names the person by MAC (the login whose device it was at that time).
"""
from __future__ import annotations

import ipaddress
import socket
import sqlite3
import time

from ledger.clock import ClockHistory
from ledger.db import Ledger, LedgerError
from ledger.flows import FLAG_END_UNKNOWN, FLAG_OPEN, STAGING_COLUMNS
from ledger.gaps import annotate

FLOW6_COLUMNS = (*STAGING_COLUMNS, "mac")
PROTO_NAMES = {6: "tcp", 17: "udp", 58: "icmpv6"}


def ip6_bytes(text: str) -> bytes:
    """IPv6 text to 16 bytes; raises ValueError naming the bad text."""
    try:
        return ipaddress.IPv6Address(text.strip().split("%")[0]).packed
    except ValueError:
        raise ValueError(f"not an IPv6 address: {text!r}") from None


def ip6_str(value: bytes) -> str:
    """16 bytes to compressed IPv6 text."""
    return str(ipaddress.IPv6Address(bytes(value)))


class Neighbours:
    """The box's IPv6 neighbour table (address -> MAC), read over rtnetlink at most once a second.

    The hook for attribution: replace `lookup` to take the MAC from elsewhere (e.g. the
    gate's own table of addresses seen per logged-in MAC).
    """

    def __init__(self, min_interval: float = 1.0) -> None:
        self.table: dict[bytes, str] = {}
        self.min_interval = min_interval
        self._read_at = 0.0

    def refresh(self) -> None:
        """Read the neighbour table again (errors leave the old table: a MAC is then missing, not wrong)."""
        self._read_at = time.monotonic()
        try:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                entries = ipr.get_neighbours(family=socket.AF_INET6)
        except Exception:  # noqa: BLE001 - any netlink failure only means no MAC this time
            return
        table = {}
        for n in entries:
            dst, mac = n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")
            if dst and mac:
                table[ipaddress.IPv6Address(dst).packed] = mac.lower()
        self.table = table

    def lookup(self, addr: bytes) -> str | None:
        """The MAC of `addr`, refreshing the table once if it is unknown and the last read is old."""
        mac = self.table.get(addr)
        if mac is None and time.monotonic() - self._read_at >= self.min_interval:
            self.refresh()
            mac = self.table.get(addr)
        return mac


def insert_rows6(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Inside the caller's transaction: append IPv6 rows in FLOW6_COLUMNS order."""
    if rows:
        conn.executemany(f"INSERT INTO flows6 ({', '.join(FLOW6_COLUMNS)}) VALUES ({', '.join('?' * len(FLOW6_COLUMNS))})",
                         rows)


def stage6(ledger: Ledger, rows: list[tuple]) -> None:
    """Append IPv6 rows (FLOW6_COLUMNS order) in one transaction; they are readable once sealed."""
    conn = ledger.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        insert_rows6(conn, rows)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise LedgerError(f"could not write {len(rows)} IPv6 flow rows to {ledger.path}: {exc}") from exc


def flows6_at(ledger: Ledger, addr: bytes, port: int, at_ms: int, slack_ms: int = 1000) -> list[dict]:
    """Sealed IPv6 flows from addr:port (the device's own) at at_ms; open ones end 'now' with FLAG_OPEN."""
    conn = ledger.db.conn
    sealed = conn.execute("SELECT COALESCE(MAX(to_id), 0) FROM seal_through WHERE tbl = 'flows6'").fetchone()[0]
    rows = conn.execute(
        f"SELECT {', '.join(FLOW6_COLUMNS)} FROM flows6 WHERE pub_ip = ? AND pub_port = ? AND start_ms <= ? "
        "AND id <= ? ORDER BY open, id", [addr, port, at_ms + slack_ms, sealed]).fetchall()
    news = {(r[0], r[6], r[8]): r[-1] for r in rows if r[1] == 1}
    now = ledger.now_ms()
    out, done = [], set()
    for r in rows:
        d = dict(zip(FLOW6_COLUMNS, r))
        k = (d["ct_id"], d["src_port"], d["pub_port"])
        if d["open"]:
            if k in done:
                continue
            d["end_ms"], d["flags"] = now, d["flags"] | FLAG_OPEN
        else:
            done.add(k)
            d["mac"] = d["mac"] or news.get(k)
        if d["start_ms"] - slack_ms <= at_ms <= d["end_ms"] + slack_ms:
            out.append(d)
    return sorted(out, key=lambda d: d["start_ms"])


def session_for_mac(ledger: Ledger, mac: str, at_ms: int) -> dict | None:
    """The login session of device `mac` at at_ms (None if it was not logged in)."""
    from ledger.query import _complete_session  # the same session rules as IPv4 attribution
    row = ledger.db.conn.execute(
        "SELECT id, at_ms, box_id, method, line_user_id, display_name, consent_version, mac, ip, expires_ms "
        "FROM logins WHERE mac = ? AND at_ms <= ? ORDER BY at_ms DESC, id DESC LIMIT 1", [mac, at_ms]).fetchone()
    if row is None:
        return None
    keys = ("login_id", "login_ms", "box_id", "method", "line_user_id", "display_name", "consent_version", "mac",
            "ip", "expires_ms")
    return _complete_session(ledger, dict(zip(keys, row)), at_ms)


def who6(ledger: Ledger, ip: str, port: int, at_ms: int, slack_ms: int = 1000) -> list[dict]:
    """Every IPv6 flow from ip:port at at_ms, each with the device (MAC) and the person's session.

    Answers have the same shape as ledger.query.who's (flow, session, clock, asked, gaps,
    may_be_incomplete); flow["mac"] is the neighbour-table MAC (None if it was unknown).
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, not {port}")
    addr = ip6_bytes(ip)
    clock = ClockHistory(ledger, at_ms, at_ms)
    answers = []
    for d in flows6_at(ledger, addr, port, at_ms, slack_ms):
        flow = {k: d[k] for k in FLOW6_COLUMNS if k not in ("ct_id", "open")}
        for k in ("src_ip", "pub_ip", "dst_ip"):
            flow[k] = ip6_str(flow[k])
        flow["proto"] = PROTO_NAMES.get(d["proto"], str(d["proto"]))
        flow["open"] = bool(d["flags"] & FLAG_OPEN)
        flow["end_unknown"] = bool(d["flags"] & FLAG_END_UNKNOWN)
        session = session_for_mac(ledger, d["mac"], at_ms) if d["mac"] else None
        answers.append({"flow": flow, "session": session, "clock": clock.label(at_ms),
                        "asked": {"ip": ip, "port": port, "at_ms": at_ms}})
    annotate(ledger, answers, at_ms, slack_ms)
    return answers
