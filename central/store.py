"""Traffic logs at the centre, in ClickHouse: embedded chDB by default, a server when
`[store] url` is set. The SAME DDL text and the SAME queries serve both; only the transport
differs (`_ChdbBackend` / `_ServerBackend`).

Design (each point measured, see README-centre.md):
- chDB allows ONE process per data folder (a second one, even read-only, fails to lock it),
  so the centre runs as one gunicorn process with threads (gthread); calls into the chDB
  session are serialised by a lock.
- Explicit codecs in the DDL: chDB defaults to ZSTD, a server to LZ4; the same bytes per row
  on both needs the codec written down.
- Flows are ordered by (pub_ip, pub_port, start_ms, ...): the attribution probe reads a few
  granules. Partitions are whole days (Asia/Bangkok) of the row's END time, so retention
  (counted from the end) drops whole partitions.
- Idempotent ingest: every INSERT carries insert_deduplication_token = box:seq:hash:table
  (needs non_replicated_deduplication_window on a single node) and the engine is a
  ReplacingMergeTree whose key ends in (box_id, row key), so a retried batch is stored once.
- Durability: fsync_after_insert and fsync_part_directory, because a box deletes its copy
  once the centre has acknowledged.
- Times are Int64 Unix milliseconds and are passed as integers: a DateTime parameter given
  as text is read in the session's time zone (UTC) and would miss a Bangkok time by 7 hours.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from syncapi.rows import TABLES

DAY_MS = 86_400_000
MAX_FLOW_MS = 7 * DAY_MS           # the box closes flows with no end after 6 days
CLOCK_SAMPLE_VALID_MS = 5 * 60 * 1000
MAX_CLOCK_OFFSET_US = 10_000        # the 2550 notification's 10 ms
FLOW_LONG_BIT = 1 << 63             # row_key of a box flows_long row; segment flows: id << 16 | idx
BKK_DAY = "toYYYYMMDD(toDateTime(intDiv({expr}, 1000), 'Asia/Bangkok'))"
TABLE_SETTINGS = "non_replicated_deduplication_window = 100000, fsync_after_insert = 1, fsync_part_directory = 1"
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}

# Column lists in DDL order. Every table ends with box_id, row key, seq, received_ms.
DDL = {
    "flows": f"""CREATE TABLE IF NOT EXISTS {{db}}.flows (
    pub_ip UInt32 CODEC(Delta, ZSTD(3)),
    pub_port UInt16 CODEC(Delta, ZSTD(3)),
    start_ms Int64 CODEC(Delta, ZSTD(3)),
    duration_ms UInt32 DEFAULT toUInt32(end_ms - start_ms) CODEC(T64, ZSTD(3)),
    proto UInt8 CODEC(ZSTD(3)),
    flags UInt8 CODEC(ZSTD(3)),
    src_ip UInt32 CODEC(ZSTD(3)),
    src_port UInt16 CODEC(ZSTD(3)),
    dst_ip UInt32 CODEC(ZSTD(3)),
    dst_port UInt16 CODEC(ZSTD(3)),
    bytes_orig UInt64 CODEC(T64, ZSTD(3)),
    bytes_reply UInt64 CODEC(T64, ZSTD(3)),
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    row_key UInt64 DEFAULT if(src_long = 1, bitOr(9223372036854775808, src_id), bitOr(bitShiftLeft(src_id, 16), src_idx))
        CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    -- Not stored: the box's columns as sent, from which the DEFAULTs above are computed at insert,
    -- so the centre passes a batch's flow rows through without touching them one by one.
    end_ms Int64 EPHEMERAL,
    src_id UInt64 EPHEMERAL,
    src_idx UInt32 EPHEMERAL,
    src_at_ms Int64 EPHEMERAL,
    src_long UInt8 EPHEMERAL
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='start_ms + duration_ms')}
ORDER BY (pub_ip, pub_port, start_ms, box_id, row_key)
SETTINGS {TABLE_SETTINGS}""",
    "leases": f"""CREATE TABLE IF NOT EXISTS {{db}}.leases (
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    ip String CODEC(ZSTD(3)),
    at_ms Int64 CODEC(Delta, ZSTD(3)),
    row_id UInt64 CODEC(Delta, ZSTD(3)),
    event LowCardinality(String) CODEC(ZSTD(3)),
    mac String CODEC(ZSTD(3)),
    hostname Nullable(String) CODEC(ZSTD(3)),
    expires_ms Nullable(Int64) CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    received_ms Int64 CODEC(Delta, ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='greatest(at_ms, ifNull(expires_ms, 0))')}
ORDER BY (box_id, ip, at_ms, row_id)
SETTINGS {TABLE_SETTINGS}""",
    "logins": f"""CREATE TABLE IF NOT EXISTS {{db}}.logins (
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    ip String CODEC(ZSTD(3)),
    at_ms Int64 CODEC(Delta, ZSTD(3)),
    row_id UInt64 CODEC(Delta, ZSTD(3)),
    method LowCardinality(String) CODEC(ZSTD(3)),
    line_user_id String CODEC(ZSTD(3)),
    display_name String CODEC(ZSTD(3)),
    friend Nullable(UInt8) CODEC(ZSTD(3)),
    friendship_changed Nullable(UInt8) CODEC(ZSTD(3)),
    consent_version Nullable(String) CODEC(ZSTD(3)),
    mac String CODEC(ZSTD(3)),
    expires_ms Int64 CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    received_ms Int64 CODEC(Delta, ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='greatest(at_ms, expires_ms)')}
ORDER BY (box_id, ip, at_ms, row_id)
SETTINGS {TABLE_SETTINGS}""",
    "logouts": f"""CREATE TABLE IF NOT EXISTS {{db}}.logouts (
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    login_id Nullable(UInt64) CODEC(ZSTD(3)),
    at_ms Int64 CODEC(Delta, ZSTD(3)),
    row_id UInt64 CODEC(Delta, ZSTD(3)),
    mac String CODEC(ZSTD(3)),
    reason LowCardinality(String) CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    received_ms Int64 CODEC(Delta, ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='at_ms')}
ORDER BY (box_id, row_id)
SETTINGS allow_nullable_key = 1, {TABLE_SETTINGS}""",
    "radius_acct": f"""CREATE TABLE IF NOT EXISTS {{db}}.radius_acct (
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    at_ms Int64 CODEC(Delta, ZSTD(3)),
    row_id UInt64 CODEC(Delta, ZSTD(3)),
    nas_address String CODEC(ZSTD(3)),
    nas_identifier Nullable(String) CODEC(ZSTD(3)),
    status_type UInt8 CODEC(ZSTD(3)),
    acct_session_id Nullable(String) CODEC(ZSTD(3)),
    mac Nullable(String) CODEC(ZSTD(3)),
    user_name Nullable(String) CODEC(ZSTD(3)),
    called_station_id Nullable(String) CODEC(ZSTD(3)),
    framed_ip Nullable(String) CODEC(ZSTD(3)),
    input_octets Nullable(Int64) CODEC(ZSTD(3)),
    output_octets Nullable(Int64) CODEC(ZSTD(3)),
    input_packets Nullable(Int64) CODEC(ZSTD(3)),
    output_packets Nullable(Int64) CODEC(ZSTD(3)),
    session_time Nullable(Int64) CODEC(ZSTD(3)),
    terminate_cause Nullable(Int64) CODEC(ZSTD(3)),
    event_ms Nullable(Int64) CODEC(ZSTD(3)),
    delay_time Nullable(Int64) CODEC(ZSTD(3)),
    dedupe_key String CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    received_ms Int64 CODEC(Delta, ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='at_ms')}
ORDER BY (box_id, at_ms, row_id)
SETTINGS {TABLE_SETTINGS}""",
    "clock_samples": f"""CREATE TABLE IF NOT EXISTS {{db}}.clock_samples (
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    at_ms Int64 CODEC(Delta, ZSTD(3)),
    row_id UInt64 CODEC(Delta, ZSTD(3)),
    synced UInt8 CODEC(ZSTD(3)),
    offset_us Nullable(Int64) CODEC(ZSTD(3)),
    stratum Nullable(UInt8) CODEC(ZSTD(3)),
    source Nullable(String) CODEC(ZSTD(3)),
    leap Nullable(String) CODEC(ZSTD(3)),
    error Nullable(String) CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    received_ms Int64 CODEC(Delta, ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='at_ms')}
ORDER BY (box_id, at_ms, row_id)
SETTINGS {TABLE_SETTINGS}""",
    # Every other box table (events, RADIUS decisions, seals, tables added later): JSON rows.
    "box_rows": f"""CREATE TABLE IF NOT EXISTS {{db}}.box_rows (
    box_id LowCardinality(String) CODEC(ZSTD(3)),
    tbl LowCardinality(String) CODEC(ZSTD(3)),
    row_id UInt64 CODEC(Delta, ZSTD(3)),
    at_ms Int64 CODEC(Delta, ZSTD(3)),
    data String CODEC(ZSTD(3)),
    seq UInt32 CODEC(ZSTD(3)),
    received_ms Int64 CODEC(Delta, ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY {BKK_DAY.format(expr='at_ms')}
ORDER BY (box_id, tbl, row_id)
SETTINGS {TABLE_SETTINGS}""",
    # One row per stored batch: the centre's receive time beside the box's times.
    "batches": f"""CREATE TABLE IF NOT EXISTS {{db}}.batches (
    box_id LowCardinality(String),
    seq UInt32,
    hash FixedString(64),
    prev_hash FixedString(64),
    box_created_ms Int64,
    received_ms Int64,
    rows UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (box_id, seq)
SETTINGS {TABLE_SETTINGS}""",
}
# The store's columns per table (the DDL's order), used to build insert rows.
COLUMNS = {
    "flows": ("pub_ip", "pub_port", "start_ms", "duration_ms", "proto", "flags", "src_ip", "src_port", "dst_ip",
              "dst_port", "bytes_orig", "bytes_reply", "box_id", "row_key", "seq"),
    "leases": ("box_id", "ip", "at_ms", "row_id", "event", "mac", "hostname", "expires_ms", "seq", "received_ms"),
    "logins": ("box_id", "ip", "at_ms", "row_id", "method", "line_user_id", "display_name", "friend",
               "friendship_changed", "consent_version", "mac", "expires_ms", "seq", "received_ms"),
    "logouts": ("box_id", "login_id", "at_ms", "row_id", "mac", "reason", "seq", "received_ms"),
    "radius_acct": ("box_id", "at_ms", "row_id", "nas_address", "nas_identifier", "status_type", "acct_session_id",
                    "mac", "user_name", "called_station_id", "framed_ip", "input_octets", "output_octets",
                    "input_packets", "output_packets", "session_time", "terminate_cause", "event_ms", "delay_time",
                    "dedupe_key", "seq", "received_ms"),
    "clock_samples": ("box_id", "at_ms", "row_id", "synced", "offset_us", "stratum", "source", "leap", "error", "seq",
                      "received_ms"),
    "box_rows": ("box_id", "tbl", "row_id", "at_ms", "data", "seq", "received_ms"),
    "batches": ("box_id", "seq", "hash", "prev_hash", "box_created_ms", "received_ms", "rows"),
}
# Tables whose day partitions retention drops (batches are tiny and kept as the chain's record).
RETAINED = ("flows", "leases", "logins", "logouts", "radius_acct", "clock_samples", "box_rows")


class StoreError(Exception):
    """The store cannot be opened or written; the message says what to do."""


def iso(ms: int | None) -> str:
    """Unix ms as ISO-8601 UTC with milliseconds ('' for None), as the box's export writes it."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ip_str(v: int) -> str:
    """Integer to dotted IPv4."""
    return str(ipaddress.IPv4Address(v))


class _ChdbBackend:
    """Embedded chDB: one session per process, serialised by a lock."""

    def __init__(self, path: Path) -> None:
        try:
            from chdb import session as chs
        except ImportError as exc:
            raise StoreError("chDB is not installed. Fix: pip install '.[central]' (or set [store] url to a "
                             "ClickHouse server)") from exc
        path.mkdir(parents=True, exist_ok=True)
        try:
            self.session = chs.Session(str(path))
        except Exception as exc:  # chdb raises plain RuntimeError
            raise StoreError(f"{path}: cannot open the chDB store: {exc}. chDB allows one process per data folder: "
                             "Fix: stop the other `central` process (the service runs as ONE gunicorn worker with "
                             "threads) or use another data_dir") from exc
        self.lock = threading.Lock()
        self.name = "chdb"

    def command(self, sql: str, params: dict | None = None) -> None:
        with self.lock:
            self.session.query(sql, "CSV", params=params or {})

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        with self.lock:
            res = self.session.query(sql, "JSONEachRow", params=params or {})
        data = res.bytes()
        return [json.loads(line) for line in data.splitlines() if line]

    def insert(self, sql: str, data: bytes) -> None:
        with self.lock:
            self.session.query(sql + "\n" + data.decode("utf-8"), "CSV")

    def close(self) -> None:
        with self.lock:
            self.session.close()


class _ServerBackend:
    """A ClickHouse server over HTTP(S) via clickhouse-connect."""

    def __init__(self, url: str, username: str, password: str) -> None:
        try:
            import clickhouse_connect
        except ImportError as exc:
            raise StoreError("clickhouse-connect is not installed. Fix: pip install '.[central]'") from exc
        try:
            self.client = clickhouse_connect.get_client(dsn=url, username=username, password=password,
                                                        settings={"output_format_json_quote_64bit_integers": 0})
        except Exception as exc:
            raise StoreError(f"cannot reach ClickHouse at {url}: {exc}. Fix: check [store] url and the password "
                             "variable named by [store] password_env") from exc
        self.lock = threading.Lock()  # clickhouse-connect clients are not safe for concurrent queries
        self.name = "server"

    def command(self, sql: str, params: dict | None = None) -> None:
        with self.lock:
            self.client.command(sql, parameters=params or None)

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        with self.lock:
            return list(self.client.query(sql, parameters=params or None).named_results())

    def insert(self, sql: str, data: bytes) -> None:
        with self.lock:
            self.client.command(sql, data=data)

    def close(self) -> None:
        self.client.close()


@dataclass
class IngestResult:
    """Rows written per store table by one batch."""

    rows: dict[str, int]


class Store:
    """The traffic-log store. Open with `open_store`; pass it to the app as services.store."""

    def __init__(self, backend: Any, database: str) -> None:
        self.backend = backend
        self.db = database
        # Filled in by the app (from the box registry) so answers can name the office.
        self.office_of: Callable[[str], str] = lambda box_id: ""

    # ---- schema ----------------------------------------------------------------------------
    def create_schema(self) -> None:
        """CREATE DATABASE / TABLE IF NOT EXISTS, the same text on chDB and a server."""
        self.backend.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
        for ddl in DDL.values():
            self.backend.command(ddl.format(db=self.db))

    def q(self, sql: str, params: dict | None = None) -> list[dict]:
        """Run a query with {name:Type} parameters; `{db}` in the text is the database."""
        return self.backend.query(sql.replace("{db}", self.db), params)

    def close(self) -> None:
        """Close the session or the client."""
        self.backend.close()

    # ---- ingest ------------------------------------------------------------------------------
    def ingest(self, box_id: str, seq: int, batch_hash: str, payload: dict, received_ms: int) -> IngestResult:
        """Write one verified batch; safe to repeat (same token: stored once).

        Raises StoreError if the store refuses; the caller must then not acknowledge.
        """
        rows: dict[str, list[list]] = {t: [] for t in COLUMNS}
        flow_inserts: list[tuple[str, list[str], str, int]] = []
        for table, sec in sorted(payload["tables"].items()):
            cols = sec["columns"]
            data = sec["rows"]
            if table == "flow_segments" or table == "flows_long":
                # Fast path: every value is an integer (checked by syncapi.rows.check_rows), so the
                # rows go through as one JSON text with box_id and seq appended to each row; the
                # table's EPHEMERAL/DEFAULT columns derive duration and row key inside ClickHouse.
                if not data:
                    continue
                names = [{"id": "src_id", "idx": "src_idx", "at_ms": "src_at_ms"}.get(c, c) for c in cols]
                tail = f",{json.dumps(box_id)},{seq}" + ("" if table == "flow_segments" else ",1")
                names += ["box_id", "seq"] + ([] if table == "flow_segments" else ["src_long"])
                flow_inserts.append((table, names, json.dumps(data, separators=(",", ":"))[1:-1].replace("]", tail + "]"),
                                     len(data)))
            elif table in ("leases", "logins", "logouts", "radius_acct", "clock_samples"):
                ix = {c: i for i, c in enumerate(cols)}
                out = rows[table]
                order = [("row_id" if c == "row_id" else c) for c in COLUMNS[table]]
                for r in data:
                    vals = []
                    for c in order:
                        if c == "box_id":
                            vals.append(box_id)
                        elif c == "row_id":
                            vals.append(r[ix["id"]])
                        elif c == "seq":
                            vals.append(seq)
                        elif c == "received_ms":
                            vals.append(received_ms)
                        else:
                            vals.append(r[ix[c]])
                    out.append(vals)
            else:
                ix_id = cols.index("id")
                ix_at = cols.index("at_ms") if "at_ms" in cols else None
                out = rows["box_rows"]
                for r in data:
                    at = r[ix_at] if ix_at is not None and isinstance(r[ix_at], int) else received_ms
                    out.append([box_id, table, r[ix_id], at,
                                json.dumps(dict(zip(cols, r)), ensure_ascii=False, separators=(",", ":")), seq, received_ms])
        total = sum(len(v) for k, v in rows.items()) + sum(n for *_, n in flow_inserts)
        rows["batches"] = [[box_id, seq, batch_hash, payload["prev_hash"], payload["created_ms"], received_ms, total]]
        written = {}
        for source, names, body_text, n in flow_inserts:
            token = f"{box_id}:{seq}:{batch_hash}:flows:{source}"
            sql = (f"INSERT INTO {self.db}.flows ({', '.join(names)}) "
                   f"SETTINGS insert_deduplication_token = '{token}', async_insert = 0 FORMAT JSONCompactEachRow")
            try:
                self.backend.insert(sql, body_text.encode())
            except Exception as exc:
                raise StoreError(f"could not store batch {seq} of {box_id} into flows: {exc}") from exc
            written["flows"] = written.get("flows", 0) + n
        # batches last: its row is the store's own statement that the batch is complete.
        for table in [t for t in COLUMNS if t != "batches"] + ["batches"]:
            if not rows[table]:
                continue
            body = "\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in rows[table]).encode()
            token = f"{box_id}:{seq}:{batch_hash}:{table}"
            sql = (f"INSERT INTO {self.db}.{table} ({', '.join(COLUMNS[table])}) "
                   f"SETTINGS insert_deduplication_token = '{token}', async_insert = 0 FORMAT JSONCompactEachRow")
            try:
                self.backend.insert(sql, body)
            except Exception as exc:
                raise StoreError(f"could not store batch {seq} of {box_id} into {table}: {exc}") from exc
            written[table] = len(rows[table])
        return IngestResult(written)

    # ---- queries for the admin pages -------------------------------------------------------
    def attribute(self, public_ip: str, public_port: int, at_ms: int, slack_ms: int) -> list[dict]:
        """Who used public_ip:public_port at at_ms (± slack_ms), across every box.

        Returns every candidate flow (more than one when several match within the slack), each
        with: box_id, office, proto, src_ip, src_port, pub_ip, pub_port, dst_ip, dst_port,
        start_ms, end_ms, flags, seq, received_ms (when the centre received the flow), the session
        that held the private address then (login_id, login_ms, logout_ms, logout_reason, end_ms
        of the session as session_end_ms, mac, line_user_id, display_name, consent_version; None
        when no login matches) and clock: 'synced' / 'unsynced' / 'unknown' for the box's clock at
        the flow's start (chrony state within 5 minutes, offset <= 10 ms).
        Times are the box's Unix ms; ValueError for a bad address or port.
        """
        ip = int(ipaddress.IPv4Address(public_ip))
        if not 0 < int(public_port) < 65536:
            raise ValueError(f"port must be 1..65535, not {public_port}")
        if slack_ms < 0:
            raise ValueError("slack_ms must be >= 0")
        flows = self.q(
            "SELECT box_id, row_key, seq, start_ms, start_ms + duration_ms AS end_ms, proto, flags, src_ip, src_port, "
            "pub_ip, pub_port, dst_ip, dst_port, bytes_orig, bytes_reply FROM {db}.flows "
            "WHERE pub_ip = {ip:UInt32} AND pub_port = {port:UInt16} AND start_ms <= {hi:Int64} "
            "AND start_ms >= {lo_start:Int64} AND start_ms + duration_ms >= {lo:Int64} ORDER BY start_ms, box_id, row_key",
            {"ip": ip, "port": int(public_port), "hi": at_ms + slack_ms, "lo": at_ms - slack_ms,
             "lo_start": at_ms - slack_ms - MAX_FLOW_MS})
        seen, out = set(), []
        for f in flows:
            if (f["box_id"], f["row_key"]) in seen:
                continue
            seen.add((f["box_id"], f["row_key"]))
            t = min(max(at_ms, f["start_ms"]), f["end_ms"])
            src = ip_str(f["src_ip"])
            s = self._session_at(f["box_id"], src, t)
            rec = self._received(f["box_id"], f["seq"])
            out.append({
                "box_id": f["box_id"], "office": self.office_of(f["box_id"]),
                "proto": PROTO_NAMES.get(f["proto"], str(f["proto"])), "src_ip": src, "src_port": f["src_port"],
                "pub_ip": ip_str(f["pub_ip"]), "pub_port": f["pub_port"], "dst_ip": ip_str(f["dst_ip"]),
                "dst_port": f["dst_port"], "start_ms": f["start_ms"], "end_ms": f["end_ms"], "flags": f["flags"],
                "bytes_orig": f["bytes_orig"], "bytes_reply": f["bytes_reply"], "seq": f["seq"], "received_ms": rec,
                "login_id": s["login_id"] if s else None, "login_ms": s["login_ms"] if s else None,
                "logout_ms": s["logout_ms"] if s else None, "logout_reason": s["logout_reason"] if s else None,
                "session_end_ms": s["end_ms"] if s else None, "mac": s["mac"] if s else None,
                "line_user_id": s["line_user_id"] if s else None, "display_name": s["display_name"] if s else None,
                "consent_version": s["consent_version"] if s else None,
                "clock": self.clock_label(f["box_id"], f["start_ms"]),
            })
        return out

    def _received(self, box_id: str, seq: int) -> int | None:
        r = self.q("SELECT received_ms FROM {db}.batches WHERE box_id = {b:String} AND seq = {s:UInt32} LIMIT 1",
                   {"b": box_id, "s": seq})
        return r[0]["received_ms"] if r else None

    def clock_label(self, box_id: str, t_ms: int) -> str:
        """'synced' if the box's newest clock sample at or before t (within 5 min) was synchronised
        within 10 ms; 'unsynced' if not; 'unknown' without a sample."""
        r = self.q("SELECT at_ms, synced, offset_us FROM {db}.clock_samples WHERE box_id = {b:String} "
                   "AND at_ms <= {t:Int64} AND at_ms >= {lo:Int64} ORDER BY at_ms DESC LIMIT 1",
                   {"b": box_id, "t": t_ms, "lo": t_ms - CLOCK_SAMPLE_VALID_MS})
        if not r:
            return "unknown"
        ok = r[0]["synced"] and r[0]["offset_us"] is not None and abs(r[0]["offset_us"]) <= MAX_CLOCK_OFFSET_US
        return "synced" if ok else "unsynced"

    _LOGIN_COLS = ("row_id AS login_id, at_ms AS login_ms, box_id, method, line_user_id, display_name, "
                   "consent_version, mac, ip, expires_ms")

    def _session_at(self, box_id: str, ip: str, t_ms: int) -> dict | None:
        r = self.q(f"SELECT {self._LOGIN_COLS} FROM {{db}}.logins WHERE box_id = {{b:String}} AND ip = {{ip:String}} "
                   "AND at_ms <= {t:Int64} ORDER BY at_ms DESC, row_id DESC LIMIT 1", {"b": box_id, "ip": ip, "t": t_ms})
        if not r:
            return None
        s = self._complete([r[0]])[0]
        return s if s["end_ms"] >= t_ms else None

    def _complete(self, logins: list[dict]) -> list[dict]:
        """Add logout, end (the earliest of logout, expiry and the next login from the same address)."""
        if not logins:
            return []
        by_box: dict[str, list[int]] = {}
        for s in logins:
            by_box.setdefault(s["box_id"], []).append(s["login_id"])
        outs: dict[tuple, dict] = {}
        for box, ids in by_box.items():
            for o in self.q("SELECT login_id, min(at_ms) AS out_ms, argMin(reason, at_ms) AS reason FROM {db}.logouts "
                            "WHERE box_id = {b:String} AND login_id IN {ids:Array(UInt64)} GROUP BY login_id",
                            {"b": box, "ids": ids}):
                outs[(box, o["login_id"])] = o
        for s in logins:
            o = outs.get((s["box_id"], s["login_id"]))
            s["logout_ms"], s["logout_reason"] = (o["out_ms"], o["reason"]) if o else (None, None)
            nxt = self.q("SELECT min(at_ms) AS t FROM {db}.logins WHERE box_id = {b:String} AND ip = {ip:String} "
                         "AND at_ms > {t:Int64}", {"b": s["box_id"], "ip": s["ip"], "t": s["login_ms"]})
            ends = [x for x in (s["logout_ms"], s["expires_ms"]) if x is not None]
            if nxt and nxt[0]["t"]:
                ends.append(nxt[0]["t"])
            s["end_ms"] = min(ends)
            s["duration_ms"] = s["end_ms"] - s["login_ms"]
        return logins

    def sessions_for_user(self, query: str, start_ms: int, end_ms: int) -> list[dict]:
        """Login sessions overlapping [start_ms, end_ms] of a LINE user, across every box.

        `query` is matched exactly against the LINE user id, or as a case-insensitive substring
        of the display name (display names change at will: they are a lead, not an identifier).
        Each row: box_id, office, login_id, line_user_id, display_name, method, consent_version,
        mac, ip, login_ms, logout_ms, logout_reason, end_ms, duration_ms, expires_ms, clock.
        Sorted by login time.
        """
        query = query.strip()
        if not query:
            raise ValueError("give a LINE user id or part of a display name")
        rows = self.q(f"SELECT {self._LOGIN_COLS} FROM {{db}}.logins WHERE at_ms <= {{e:Int64}} AND expires_ms >= {{s:Int64}} "
                      "AND (line_user_id = {q:String} OR positionCaseInsensitiveUTF8(display_name, {q:String}) > 0) "
                      "ORDER BY at_ms, box_id, row_id LIMIT 1 BY box_id, login_id LIMIT 10000",
                      {"s": start_ms, "e": end_ms, "q": query})
        out = []
        for s in self._complete(rows):
            if s["end_ms"] >= start_ms:
                s["office"] = self.office_of(s["box_id"])
                s["clock"] = self.clock_label(s["box_id"], s["login_ms"])
                out.append(s)
        return out

    def export_rows(self, box_id: str, start_ms: int, end_ms: int) -> dict[str, list[dict]]:
        """One box's sessions and flows in [start_ms, end_ms], in the box's `ledger export` format.

        Returns {"sessions": [...], "flows": [...]}: dicts with exactly the fields (and order) of
        ledger/export.py SESSION_FIELDS and FLOW_FIELDS, times as ISO-8601 UTC text, so the admin
        side writes the same CSV/JSONL and manifest as a box.
        """
        if end_ms < start_ms:
            raise ValueError("the export window ends before it starts")
        office = self.office_of(box_id)
        logins = self.q(f"SELECT {self._LOGIN_COLS} FROM {{db}}.logins WHERE box_id = {{b:String}} AND at_ms <= {{e:Int64}} "
                        "AND expires_ms >= {s:Int64} ORDER BY at_ms, row_id LIMIT 1 BY login_id",
                        {"b": box_id, "s": start_ms, "e": end_ms})
        sess = [s for s in self._complete(logins) if s["end_ms"] >= start_ms]
        by_ip: dict[str, list[dict]] = {}
        for s in sess:
            s["bytes_orig"] = s["bytes_reply"] = 0
            lease = self.q("SELECT minIf(at_ms, event IN ('add', 'old') AND at_ms <= {l:Int64}) AS first, "
                           "minIf(at_ms, event = 'del' AND at_ms >= {l:Int64}) AS del, "
                           "argMaxIf(expires_ms, at_ms, at_ms <= {e:Int64}) AS exp, "
                           "countIf(event IN ('add', 'old') AND at_ms <= {l:Int64}) AS n_first, "
                           "countIf(event = 'del' AND at_ms >= {l:Int64}) AS n_del "
                           "FROM {db}.leases WHERE box_id = {b:String} AND ip = {ip:String} AND mac = {m:String}",
                           {"b": box_id, "ip": s["ip"], "m": s["mac"], "l": s["login_ms"], "e": s["end_ms"]})[0]
            s["lease_start_ms"] = lease["first"] if lease["n_first"] else None
            s["lease_end_ms"] = lease["del"] if lease["n_del"] else lease["exp"]
            s["clock"] = self.clock_label(box_id, s["login_ms"])
            by_ip.setdefault(s["ip"], []).append(s)

        def owner(src: str, t: int) -> dict | None:
            for s in reversed(by_ip.get(src, [])):
                if s["login_ms"] <= t <= s["end_ms"]:
                    return s
            return None

        flows = self.q("SELECT start_ms, start_ms + duration_ms AS end_ms, proto, flags, src_ip, src_port, pub_ip, pub_port, "
                       "dst_ip, dst_port, bytes_orig, bytes_reply, row_key FROM {db}.flows WHERE box_id = {b:String} "
                       "AND start_ms <= {e:Int64} AND start_ms >= {lo:Int64} AND start_ms + duration_ms >= {s:Int64} "
                       "ORDER BY start_ms, src_ip, src_port LIMIT 1 BY row_key",
                       {"b": box_id, "s": start_ms, "e": end_ms, "lo": start_ms - MAX_FLOW_MS})
        clock_rows = self.q("SELECT at_ms, synced, offset_us FROM {db}.clock_samples WHERE box_id = {b:String} AND "
                            "at_ms BETWEEN {lo:Int64} AND {e:Int64} ORDER BY at_ms",
                            {"b": box_id, "lo": start_ms - CLOCK_SAMPLE_VALID_MS - MAX_FLOW_MS, "e": end_ms})
        import bisect
        c_at = [c["at_ms"] for c in clock_rows]

        def clock(t: int) -> str:
            i = bisect.bisect_right(c_at, t) - 1
            if i < 0 or t - c_at[i] > CLOCK_SAMPLE_VALID_MS:
                return "unknown"
            c = clock_rows[i]
            return "synced" if c["synced"] and c["offset_us"] is not None and abs(c["offset_us"]) <= MAX_CLOCK_OFFSET_US else "unsynced"

        flow_out = []
        for f in flows:
            src = ip_str(f["src_ip"])
            s = owner(src, f["start_ms"])
            if s is not None:
                s["bytes_orig"] += f["bytes_orig"]
                s["bytes_reply"] += f["bytes_reply"]
            flow_out.append({"box_id": box_id, "office": office, "start": iso(f["start_ms"]), "end": iso(f["end_ms"]),
                             "proto": PROTO_NAMES.get(f["proto"], str(f["proto"])), "src_ip": src,
                             "src_port": f["src_port"], "pub_ip": ip_str(f["pub_ip"]), "pub_port": f["pub_port"],
                             "dst_ip": ip_str(f["dst_ip"]), "dst_port": f["dst_port"], "bytes_orig": f["bytes_orig"],
                             "bytes_reply": f["bytes_reply"], "end_unknown": bool(f["flags"] & 1),
                             "login_id": s["login_id"] if s else "", "mac": s["mac"] if s else "",
                             "line_user_id": s["line_user_id"] if s else "", "clock": clock(f["start_ms"])})
        sess_out = [{"box_id": box_id, "office": office, "login_id": s["login_id"], "line_user_id": s["line_user_id"],
                     "display_name": s["display_name"], "consent_version": s["consent_version"] or "",
                     "method": s["method"], "mac": s["mac"], "ip": s["ip"], "lease_start": iso(s["lease_start_ms"]),
                     "lease_end": iso(s["lease_end_ms"]), "login": iso(s["login_ms"]), "logout": iso(s["logout_ms"]),
                     "logout_reason": s["logout_reason"] or "", "end": iso(s["end_ms"]),
                     "duration_s": s["duration_ms"] // 1000, "bytes_orig": s["bytes_orig"],
                     "bytes_reply": s["bytes_reply"], "clock": s["clock"]} for s in sess]
        return {"sessions": sess_out, "flows": flow_out}

    def box_stats(self) -> dict[str, dict]:
        """Per box: rows stored per table, the newest record time (box clock) and the newest
        receive time (centre clock), last batch seq. {box_id: {"rows": {table: n}, "last_record_ms",
        "last_received_ms", "last_seq", "batches"}}."""
        out: dict[str, dict] = {}
        for t, at in (("flows", "start_ms + duration_ms"), ("leases", "at_ms"), ("logins", "at_ms"),
                      ("logouts", "at_ms"), ("radius_acct", "at_ms"), ("clock_samples", "at_ms"), ("box_rows", "at_ms")):
            for r in self.q(f"SELECT box_id, count() AS n, max({at}) AS last FROM {{db}}.{t} GROUP BY box_id"):
                b = out.setdefault(r["box_id"], {"rows": {}, "last_record_ms": None})
                b["rows"][t] = r["n"]
                b["last_record_ms"] = max(b["last_record_ms"] or 0, r["last"])
        for r in self.q("SELECT box_id, count() AS n, max(seq) AS s, max(received_ms) AS rec FROM {db}.batches GROUP BY box_id"):
            b = out.setdefault(r["box_id"], {"rows": {}, "last_record_ms": None})
            b.update({"batches": r["n"], "last_seq": r["s"], "last_received_ms": r["rec"]})
        return out

    def count_rows(self, table: str, box_id: str | None = None) -> tuple[int, int]:
        """(rows, distinct row keys) of a store table, optionally of one box: equal means no duplicates."""
        key = "row_key" if table == "flows" else ("(tbl, row_id)" if table == "box_rows" else "row_id")
        where = "WHERE box_id = {b:String}" if box_id else ""
        r = self.q(f"SELECT count() AS n, uniqExact(box_id, {key}) AS u FROM {{db}}.{table} {where}",
                   {"b": box_id} if box_id else None)[0]
        return r["n"], r["u"]

    def row_keys(self, box_id: str) -> dict[str, list]:
        """Every stored row of a box as box-side keys, per box table, duplicates kept (reconciliation).

        flows come back as "flow_segments" [segment id, index] and "flows_long" [id]; box_rows under
        their own table names; the rest as ids.
        """
        out: dict[str, list] = {}
        for r in self.q("SELECT row_key FROM {db}.flows WHERE box_id = {b:String}", {"b": box_id}):
            k = r["row_key"]
            if k & FLOW_LONG_BIT:
                out.setdefault("flows_long", []).append(k & ~FLOW_LONG_BIT)
            else:
                out.setdefault("flow_segments", []).append([k >> 16, k & 0xFFFF])
        for t in ("leases", "logins", "logouts", "radius_acct", "clock_samples"):
            ids = [r["row_id"] for r in self.q(f"SELECT row_id FROM {{db}}.{t} WHERE box_id = {{b:String}}", {"b": box_id})]
            if ids:
                out[t] = ids
        for r in self.q("SELECT tbl, row_id FROM {db}.box_rows WHERE box_id = {b:String}", {"b": box_id}):
            out.setdefault(r["tbl"], []).append(r["row_id"])
        return out

    # ---- the Official Account's reads (central/oa) ------------------------------------------
    def oa_consent_events(self, after_received_ms: int, limit: int = 100_000) -> list[dict]:
        """Ledger `events` rows of kind `oa_consent` (the portal's optional box) received after
        `after_received_ms`, oldest first: [{data (the row's JSON text), received_ms}]."""
        return self.q("SELECT data, received_ms FROM {db}.box_rows FINAL WHERE tbl = 'events' "
                      "AND received_ms > {hw:Int64} AND JSONExtractString(data, 'kind') = 'oa_consent' "
                      f"ORDER BY received_ms, at_ms LIMIT {int(limit)}", {"hw": after_received_ms})

    def visitors_per_box_day(self, start_ms: int, end_ms: int) -> list[dict]:
        """Distinct visitors (LINE user, else device) per box per Bangkok day in [start, end):
        [{box_id, day (YYYY-MM-DD), visitors}]."""
        return self.q("SELECT box_id, toString(toDate(fromUnixTimestamp64Milli(at_ms), 'Asia/Bangkok')) AS day, "
                      "uniqExact(if(line_user_id != '', line_user_id, mac)) AS visitors FROM {db}.logins FINAL "
                      "WHERE at_ms >= {s:Int64} AND at_ms < {e:Int64} GROUP BY box_id, day ORDER BY day, box_id "
                      "LIMIT 100000", {"s": start_ms, "e": end_ms})

    def friends_brought_per_box_month(self, start_ms: int, end_ms: int) -> list[dict]:
        """LINE users who added the OA as a friend while logging in, per box per Bangkok month:
        [{box_id, month (YYYY-MM), friends}]."""
        rows = self.q("SELECT box_id, toString(toStartOfMonth(fromUnixTimestamp64Milli(at_ms), 'Asia/Bangkok')) AS m, "
                      "uniqExact(line_user_id) AS friends FROM {db}.logins FINAL WHERE friendship_changed = 1 "
                      "AND line_user_id != '' AND at_ms >= {s:Int64} AND at_ms < {e:Int64} GROUP BY box_id, m "
                      "ORDER BY m, box_id LIMIT 100000", {"s": start_ms, "e": end_ms})
        return [{"box_id": r["box_id"], "month": r["m"][:7], "friends": int(r["friends"])} for r in rows]

    def logins_of_users(self, user_ids: list[str], start_ms: int, end_ms: int) -> list[dict]:
        """Every login of any of `user_ids` (LINE user ids) overlapping [start_ms, end_ms], in one
        query (the OA's WiFi check-in asks once per pass, not once per trainee). Each row:
        line_user_id, box_id, office, login_ms, end_ms (the earlier of logout and expiry)."""
        if not user_ids:
            return []
        # the ids travel as one JSON string: the same text binds on chDB and on a server
        rows = self.q("""
            SELECT l.line_user_id AS line_user_id, l.box_id AS box_id, l.at_ms AS login_ms, l.expires_ms AS expires_ms,
                   o.out_ms AS out_ms
            FROM (SELECT line_user_id, box_id, row_id, at_ms, expires_ms FROM {db}.logins FINAL
                  WHERE has(JSONExtract({u:String}, 'Array(String)'), line_user_id) AND at_ms <= {e:Int64} AND expires_ms >= {s:Int64}) AS l
            LEFT JOIN (SELECT box_id, assumeNotNull(login_id) AS login_id, min(at_ms) AS out_ms FROM {db}.logouts
                       WHERE login_id IN (SELECT row_id FROM {db}.logins WHERE has(JSONExtract({u:String}, 'Array(String)'), line_user_id)
                                          AND at_ms <= {e:Int64} AND expires_ms >= {s:Int64})
                       GROUP BY box_id, login_id) AS o
              ON o.box_id = l.box_id AND o.login_id = l.row_id
            ORDER BY login_ms, box_id LIMIT 100000""", {"u": json.dumps(list(user_ids)), "s": start_ms, "e": end_ms})
        out = []
        for r in rows:
            # no logout row: the join's default is 0, which no real logout time has
            end = min(r["expires_ms"], r["out_ms"]) if r["out_ms"] else r["expires_ms"]
            if end >= start_ms:
                out.append({"line_user_id": r["line_user_id"], "box_id": r["box_id"], "office": self.office_of(r["box_id"]),
                            "login_ms": r["login_ms"], "end_ms": end})
        return out

    # ---- retention ----------------------------------------------------------------------------
    def partitions(self) -> dict[str, list[str]]:
        """Active day partitions (YYYYMMDD, Bangkok) per retained table."""
        out: dict[str, list[str]] = {}
        for r in self.q("SELECT table, partition_id FROM system.parts WHERE database = {d:String} AND active "
                        "GROUP BY table, partition_id ORDER BY table, partition_id", {"d": self.db}):
            if r["table"] in RETAINED:
                out.setdefault(r["table"], []).append(r["partition_id"])
        return out

    def drop_partition(self, table: str, partition_id: str) -> None:
        """Drop one whole day partition (retention)."""
        if table not in RETAINED or not partition_id.isdigit():
            raise ValueError(f"not a retained table/partition: {table} {partition_id}")
        self.backend.command(f"ALTER TABLE {self.db}.{table} DROP PARTITION ID '{partition_id}'")


def open_store(url: str = "", chdb_path: str | Path | None = None, database: str = "skillspot",
               username: str = "default", password_env: str = "SKILLSPOT_CLICKHOUSE_PASSWORD") -> Store:
    """Open the store (chDB at chdb_path when url is empty, else the server) and create the schema."""
    if url:
        backend = _ServerBackend(url, username, os.environ.get(password_env, ""))
    else:
        if chdb_path is None:
            raise StoreError("no [store] url and no chDB path. Fix: set data_dir or [store] url")
        backend = _ChdbBackend(Path(chdb_path))
    store = Store(backend, database)
    store.create_schema()
    return store
