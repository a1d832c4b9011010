"""Attribution: who used a public address and port at a time; sessions by MAC, LINE user or window."""
from __future__ import annotations

from dataclasses import asdict

from ledger.clock import ClockHistory
from ledger.db import Ledger
from ledger.gaps import annotate
from ledger.flows import FLAG_END_UNKNOWN, FLAG_OPEN, flows_at, ip_int, ip_str
from ledger.segments import Flow

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}


def flow_dict(f: Flow) -> dict:
    """A flow with dotted addresses and a protocol name, for output."""
    d = asdict(f)
    for k in ("src_ip", "pub_ip", "dst_ip"):
        d[k] = ip_str(d[k])
    d["proto"] = PROTO_NAMES.get(f.proto, str(f.proto))
    d["open"] = bool(f.flags & FLAG_OPEN)
    d["end_unknown"] = bool(f.flags & FLAG_END_UNKNOWN)
    return d


def session_at(ledger: Ledger, ip: str, at_ms: int) -> dict | None:
    """The login session that held private `ip` at `at_ms`, with its lease, or None."""
    conn = ledger.db.conn
    row = conn.execute(
        "SELECT id, at_ms, box_id, method, line_user_id, display_name, consent_version, mac, ip, expires_ms "
        "FROM logins WHERE ip = ? AND at_ms <= ? ORDER BY at_ms DESC, id DESC LIMIT 1", [ip, at_ms]).fetchone()
    if row is None:
        return None
    keys = ("login_id", "login_ms", "box_id", "method", "line_user_id", "display_name", "consent_version", "mac",
            "ip", "expires_ms")
    s = dict(zip(keys, row))
    return _complete_session(ledger, s, at_ms)


def _complete_session(ledger: Ledger, s: dict, at_ms: int | None) -> dict | None:
    conn = ledger.db.conn
    out = conn.execute("SELECT MIN(at_ms), reason FROM logouts WHERE login_id = ?", [s["login_id"]]).fetchone()
    s["logout_ms"], s["logout_reason"] = out if out and out[0] is not None else (None, None)
    s["end_ms"] = min(x for x in (s["logout_ms"], s["expires_ms"]) if x is not None)
    # A later login from the same address ends this one.
    nxt = conn.execute("SELECT MIN(at_ms) FROM logins WHERE ip = ? AND at_ms > ?", [s["ip"], s["login_ms"]]).fetchone()[0]
    if nxt is not None:
        s["end_ms"] = min(s["end_ms"], nxt)
    if at_ms is not None and at_ms > s["end_ms"]:
        return None
    s["duration_ms"] = s["end_ms"] - s["login_ms"]
    lease = conn.execute(
        "SELECT at_ms, event, mac, expires_ms FROM leases WHERE ip = ? AND mac = ? AND at_ms <= ? "
        "ORDER BY at_ms DESC, id DESC LIMIT 1", [s["ip"], s["mac"], at_ms if at_ms is not None else s["end_ms"]]).fetchone()
    first = conn.execute(
        "SELECT MIN(at_ms) FROM leases WHERE ip = ? AND mac = ? AND event IN ('add', 'old') AND at_ms <= ?",
        [s["ip"], s["mac"], s["login_ms"]]).fetchone()[0]
    end = conn.execute("SELECT MIN(at_ms) FROM leases WHERE ip = ? AND mac = ? AND event = 'del' AND at_ms >= ?",
                       [s["ip"], s["mac"], s["login_ms"]]).fetchone()[0]
    s["lease_start_ms"] = first if first is not None else (lease[0] if lease else None)
    s["lease_end_ms"] = end if end is not None else (lease[3] if lease else None)
    return s


def who(ledger: Ledger, public_ip: str, port: int, at_ms: int, slack_ms: int = 1000) -> list[dict]:
    """Every flow that used public_ip:port at at_ms, each with the person, device and session.

    An IPv6 address (no NAT: the device's own) is answered by ledger.flows6.who6, same shape.
    """
    if ":" in public_ip:
        from ledger.flows6 import who6
        return who6(ledger, public_ip, port, at_ms, slack_ms)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, not {port}")
    clock = ClockHistory(ledger, at_ms, at_ms)
    answers = []
    for f in flows_at(ledger, ip_int(public_ip), port, at_ms, slack_ms):
        src = ip_str(f.src_ip)
        answers.append({"flow": flow_dict(f), "session": session_at(ledger, src, at_ms),
                        "clock": clock.label(at_ms), "asked": {"ip": public_ip, "port": port, "at_ms": at_ms}})
    # Inside a flow-logger outage another flow may have used the address unrecorded (ledger.gaps).
    annotate(ledger, answers, at_ms, slack_ms)
    return answers


def sessions(ledger: Ledger, start_ms: int, end_ms: int, mac: str | None = None,
             line_user_id: str | None = None) -> list[dict]:
    """Login sessions overlapping [start_ms, end_ms], optionally of one MAC or one LINE user."""
    where = ["at_ms <= ?", "expires_ms >= ?"]
    args: list = [end_ms, start_ms]
    if mac:
        where.append("mac = ?")
        args.append(mac.lower())
    if line_user_id:
        where.append("line_user_id = ?")
        args.append(line_user_id)
    rows = ledger.db.conn.execute(
        "SELECT id, at_ms, box_id, method, line_user_id, display_name, consent_version, mac, ip, expires_ms "
        f"FROM logins WHERE {' AND '.join(where)} ORDER BY at_ms, id", args).fetchall()
    keys = ("login_id", "login_ms", "box_id", "method", "line_user_id", "display_name", "consent_version", "mac",
            "ip", "expires_ms")
    out = []
    clock = ClockHistory(ledger, start_ms, end_ms)
    for r in rows:
        s = _complete_session(ledger, dict(zip(keys, r)), None)
        if s is not None and s["end_ms"] >= start_ms:
            s["clock"] = clock.label(s["login_ms"])
            out.append(s)
    return out
