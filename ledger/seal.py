"""Sealing: a SHA-256 hash chain over every ledger table, signed with the box's Ed25519 key.

Which tables are sealed is discovered, not listed: every table in the file is sealed except
the few named in EXEMPT_TABLES, each with the reason it holds no traffic data of its own. A
table added by a later migration therefore joins the chain at the next seal without any code
change; it must be a rowid table (`id INTEGER PRIMARY KEY`) that is only appended to.

Each seal stores, for every row it covers, a truncated SHA-256 of the row's content (not its
id), so `verify` can name the exact row that was changed, deleted, inserted or moved:
- most tables: (row id, 16-byte hash) entries;
- flow_staging (the flow logger's buffer, two rows per flow): 8-byte hashes for a contiguous
  id range, ids implicit, so the seal costs 16 bytes per flow while the flow is staged.
Staged rows are deleted by compaction; a sealed staged row may be absent only if a sealed
`flow_compactions` row says it was consumed. The flow logger seals the rows it stages in the
same transaction that writes them (ledger.flows.stage_rows with a key), and `flows_at` /
`flows_between` read only staged rows a seal already covers.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.db import Ledger, LedgerError, migrate

# Tables the chain does not cover, and why. Everything else in the file is sealed.
EXEMPT_TABLES: dict[str, str] = {
    "seals": "the chain itself (each seal hashes the previous one)",
    "retention_guard": "empty except inside retention's own transaction",
    "ledger_retention": "retention rules written by the migrations; verify compares it with them",
    "staging_seals": "derived index of the seals covering flow_staging; every hash is read from the signed seal",
    "seal_through": "derived per-table high-water mark of the chain; verify recomputes and compares it",
    "flowlog_heartbeat": "the flow logger's liveness mark, rewritten every flush; it becomes a sealed flowlog_gaps row",
}
UNSEALED_TABLES = frozenset(EXEMPT_TABLES)
# Exempt tables whose whole content the migrations define: verify rebuilds them and compares.
STATIC_TABLES = ("ledger_retention",)
# Tables sealed as contiguous id ranges with short hashes (see the module docstring).
SHORT_HASH_TABLES = {"flow_staging": 8}
STAGING = "flow_staging"
GENESIS = "0" * 64
ROW_HASH_BYTES = 16
ENTRY = struct.Struct(f"<q{ROW_HASH_BYTES}s")
RANGE = struct.Struct("<qq")
KEY_FILE = "ledger_ed25519.pem"
PUB_FILE = "ledger_ed25519.pub"


def load_or_create_key(data_dir: str | Path) -> Ed25519PrivateKey:
    """The box's signing key from data_dir, created (mode 0600) on first use."""
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, OSError) as exc:
            raise LedgerError(f"{path}: not a readable Ed25519 key ({exc}). Fix: restore it from backup; "
                              "a new key would break the chain's signatures") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerError(f"{path}: not an Ed25519 key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    (Path(data_dir) / PUB_FILE).write_bytes(public_pem(key.public_key()))
    return key


def public_pem(pub: Ed25519PublicKey) -> bytes:
    """The public key as PEM (what the centre keeps to check signatures)."""
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(pub: Ed25519PublicKey) -> str:
    """A short fingerprint of the public key."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sealed_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table the chain covers (discovered from the schema), sorted by name."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return [n for n in names if n not in UNSEALED_TABLES and not n.startswith("sqlite_")]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    if "id" not in cols:
        raise LedgerError(f"table {table} has no id column, so it cannot be sealed. Fix: give it "
                          "'id INTEGER PRIMARY KEY' or add it, with the reason, to ledger.seal.EXEMPT_TABLES")
    return [c for c in cols if c != "id"]


_NONE = type(None)


@functools.lru_cache(maxsize=256)
def _int_format(types: tuple) -> str | None:
    """A %-format that spells a row of ints and NULLs exactly as row_hash does (None: other types)."""
    parts = []
    for t in types:
        if t is int:
            parts.append("I%d;")
        elif t is _NONE:
            parts.append("N%.0s")  # consumes the None, prints nothing of it
        else:
            return None
    return "".join(parts)


def row_hash(values: tuple) -> bytes:
    """SHA-256 (truncated) of a row's content, type-tagged so 1, '1' and b'1' differ."""
    fmt = _int_format(tuple(map(type, values)))
    if fmt is not None:
        # The common case (flow rows are all integers): one format call instead of a loop.
        return hashlib.sha256((fmt % tuple(values)).encode()).digest()[:ROW_HASH_BYTES]
    h = hashlib.sha256()
    for v in values:
        if v is None:
            h.update(b"N")
        elif isinstance(v, int):
            h.update(b"I" + str(v).encode() + b";")
        elif isinstance(v, float):
            h.update(b"F" + repr(v).encode() + b";")
        elif isinstance(v, str):
            b = v.encode("utf-8")
            h.update(b"S" + str(len(b)).encode() + b":" + b)
        else:
            b = bytes(v)
            h.update(b"B" + str(len(b)).encode() + b":" + b)
    return h.digest()[:ROW_HASH_BYTES]


def _rows(conn: sqlite3.Connection, table: str, after_id: int, through_id: int | None = None):
    cols = _columns(conn, table)
    sel = ", ".join(f'"{c}"' for c in cols)
    sql = f'SELECT id, {sel} FROM "{table}" WHERE id > ?'
    args: list = [after_id]
    if through_id is not None:
        sql += " AND id <= ?"
        args.append(through_id)
    return conn.execute(sql + " ORDER BY id", args)


def seal_digest(prev_hash: str, seal_id: int, at_ms: int, ranges: str, row_hashes: bytes) -> str:
    """The chain link: SHA-256 over the previous head and this batch."""
    h = hashlib.sha256()
    h.update(f"skillspot-ledger-seal-v1\n{prev_hash}\n{seal_id}\n{at_ms}\n{ranges}\n".encode())
    h.update(hashlib.sha256(row_hashes).digest())
    return h.hexdigest()


def _through_from_chain(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    through: dict[str, tuple[int, int]] = {}
    for seal_id, ranges in conn.execute("SELECT id, ranges FROM seals ORDER BY id"):
        for table, r in json.loads(ranges).items():
            if r["to"] >= through.get(table, (0, 0))[0]:
                through[table] = (r["to"], seal_id)
    return through


def _sealed_through(conn: sqlite3.Connection) -> dict[str, int]:
    """Per table, the highest id the chain covers: from seal_through, rebuilt if it lags the chain."""
    newest = conn.execute("SELECT MAX(id) FROM seals").fetchone()[0]
    kept = conn.execute("SELECT MAX(seal_id) FROM seal_through").fetchone()[0]
    if newest is not None and kept != newest:
        # First seal after the upgrade to 0006, or the bookkeeping was damaged: read the chain once.
        conn.execute("DELETE FROM seal_through")
        conn.executemany("INSERT INTO seal_through (tbl, to_id, seal_id) VALUES (?, ?, ?)",
                         [(t, to, sid) for t, (to, sid) in _through_from_chain(conn).items()])
    return dict(conn.execute("SELECT tbl, to_id FROM seal_through").fetchall())


def seal_in_transaction(conn: sqlite3.Connection, key: Ed25519PrivateKey, at_ms: int,
                        fresh: dict[str, tuple[int, list[tuple]]] | None = None) -> dict | None:
    """Inside the caller's write transaction: seal every row appended since the last seal.

    Used by seal() and by the writers that seal what they write in the same transaction
    (the flow logger's staging, compaction). `fresh` maps a table to (first id, rows) that
    the caller has just inserted with consecutive ids, in column order without the id: their
    hashes are computed from memory instead of reading them back (the flow logger's hot
    path). Returns the new seal, or None if nothing is new.
    """
    through = _sealed_through(conn)
    ranges: dict[str, dict] = {}
    blob = bytearray()
    staging_index = None
    for table in sealed_tables(conn):
        start = through.get(table, 0)
        known = (fresh or {}).get(table)
        if known is not None and known[0] == start + 1 and known[1]:
            first_id, values = known
            rows = [(first_id + i, *v) for i, v in enumerate(values)]
        else:
            rows = _rows(conn, table, start).fetchall()
        if not rows:
            continue
        short = SHORT_HASH_TABLES.get(table)
        first, last = rows[0][0], rows[-1][0]
        offset = len(blob)
        if short and last - first + 1 == len(rows):
            blob += b"".join(row_hash(r[1:])[:short] for r in rows)
            ranges[table] = {"from": first - 1, "to": last, "rows": len(rows), "h": short}
        else:
            short = None
            for r in rows:
                blob += ENTRY.pack(r[0], row_hash(r[1:]))
            ranges[table] = {"from": start, "to": last, "rows": len(rows)}
        if table == STAGING:
            staging_index = (ranges[table]["from"], last, offset, len(rows), short or 0)
    if not ranges:
        return None
    prev = conn.execute("SELECT id, head_hash FROM seals ORDER BY id DESC LIMIT 1").fetchone()
    seal_id = (prev[0] + 1) if prev else 1
    prev_hash = prev[1] if prev else GENESIS
    ranges_json = json.dumps(ranges, sort_keys=True, separators=(",", ":"))
    head = seal_digest(prev_hash, seal_id, at_ms, ranges_json, bytes(blob))
    sig = key.sign(bytes.fromhex(head)).hex()
    conn.execute("INSERT INTO seals (id, at_ms, prev_hash, ranges, row_hashes, head_hash, key_id, signature) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (seal_id, at_ms, prev_hash, ranges_json, bytes(blob), head, key_id(key.public_key()), sig))
    conn.executemany("INSERT OR REPLACE INTO seal_through (tbl, to_id, seal_id) VALUES (?, ?, ?)",
                     [(t, r["to"], seal_id) for t, r in ranges.items()])
    if staging_index is not None:
        conn.execute("INSERT INTO staging_seals (seal_id, from_id, to_id, hash_offset, n_rows, hash_bytes) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (seal_id, *staging_index))
    return {"id": seal_id, "head_hash": head, "tables": ranges}


def seal(ledger: Ledger, key: Ed25519PrivateKey) -> dict | None:
    """Seal every row appended since the last seal; returns the new seal (None if nothing new)."""
    conn = ledger.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        result = seal_in_transaction(conn, key, ledger.now_ms())
        conn.execute("COMMIT" if result else "ROLLBACK")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise LedgerError(f"sealing failed in {ledger.path}: {exc}") from exc
    return result


def staging_sealed_through(conn: sqlite3.Connection) -> int:
    """The highest flow_staging id a seal covers (rows above it are not yet readable by who)."""
    return conn.execute("SELECT COALESCE(MAX(to_id), 0) FROM staging_seals").fetchone()[0]


class StagingHashes:
    """Sealed hashes of staged rows, found through staging_seals and read from the signed seals."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._seal: tuple | None = None  # (seal_id, from_id, to_id, hashes by id or bytes, width)

    def _load(self, rid: int) -> None:
        row = self.conn.execute(
            "SELECT seal_id, from_id, to_id, hash_offset, n_rows, hash_bytes FROM staging_seals "
            "WHERE to_id >= ? ORDER BY to_id LIMIT 1", [rid]).fetchone()
        if row is None or row[1] >= rid:
            self._seal = (None, rid - 1, rid, None, 0)
            return
        seal_id, from_id, to_id, off, n, width = row
        blob = self.conn.execute("SELECT row_hashes FROM seals WHERE id = ?", [seal_id]).fetchone()
        if blob is None:
            self._seal = (None, from_id, to_id, None, 0)
            return
        blob = bytes(blob[0])
        if width:
            self._seal = (seal_id, from_id, to_id, blob[off:off + n * width], width)
        else:
            entries = {}
            for i in range(n):
                eid, h = ENTRY.unpack_from(blob, off + i * ENTRY.size)
                entries[eid] = h
            self._seal = (seal_id, from_id, to_id, entries, 0)

    def expected(self, rid: int) -> tuple[bytes, int] | None:
        """(sealed hash, seal id) of staged row `rid`, or None if no seal covers it."""
        s = self._seal
        if s is None or not s[1] < rid <= s[2]:
            self._load(rid)
            s = self._seal
        seal_id, from_id, _, hashes, width = s
        if seal_id is None:
            return None
        if width:
            i = (rid - from_id - 1) * width
            h = hashes[i:i + width]
            return (h, seal_id) if len(h) == width else None
        h = hashes.get(rid)
        return None if h is None else (h, seal_id)

    def matches(self, row: tuple) -> bool | None:
        """True/False if staged `row` (id first) equals what was sealed; None if it is not sealed."""
        exp = self.expected(row[0])
        if exp is None:
            return None
        return row_hash(row[1:])[:len(exp[0])] == exp[0]


def pack_ranges(ids: list[int]) -> bytes:
    """Sorted ids as packed inclusive (first, last) int64 pairs."""
    out = bytearray()
    start = prev = None
    for i in ids:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out += RANGE.pack(start, prev)
            start = prev = i
    if start is not None:
        out += RANGE.pack(start, prev)
    return bytes(out)


def unpack_ranges(blob: bytes) -> list[tuple[int, int]]:
    """The inverse of pack_ranges; raises ValueError on a damaged blob."""
    if len(blob) % RANGE.size:
        raise ValueError("packed ranges have a partial entry")
    return [RANGE.unpack_from(blob, i) for i in range(0, len(blob), RANGE.size)]


def chain_head(ledger: Ledger) -> dict | None:
    """The newest seal's id, time and head hash (None before the first seal)."""
    row = ledger.db.conn.execute("SELECT id, at_ms, head_hash, key_id FROM seals ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else {"seal_id": row[0], "at_ms": row[1], "head_hash": row[2], "key_id": row[3]}


@dataclass
class VerifyReport:
    """What verify found. ok is False if any problem was found; unsealed rows are not problems."""

    seals: int = 0
    rows_checked: int = 0
    problems: list[str] = field(default_factory=list)
    unsealed: dict[str, int] = field(default_factory=dict)
    head: str = GENESIS

    @property
    def ok(self) -> bool:
        return not self.problems


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _in_ranges(merged: list[tuple[int, int]], starts: list[int], rid: int) -> bool:
    i = bisect.bisect_right(starts, rid) - 1
    return i >= 0 and merged[i][0] <= rid <= merged[i][1]


def verify(ledger: Ledger, public_key: Ed25519PublicKey, max_problems: int = 1000) -> VerifyReport:
    """Check the chain, every signature and every sealed row; name each discrepancy."""
    conn = ledger.db.conn
    rep = VerifyReport()

    def problem(msg: str) -> None:
        if len(rep.problems) < max_problems:
            rep.problems.append(msg)

    expected: dict[str, dict[int, tuple[bytes, int]]] = {}
    # flow_staging: (first id, last id, seal id, offset, width) per seal, hashes read lazily.
    staging: list[tuple[int, int, int, int, int]] = []
    staging_entries: dict[int, tuple[bytes, int]] = {}
    staging_index: list[tuple] = []  # what staging_seals should hold
    chain_through: dict[str, tuple[int, int]] = {}
    prev_hash, prev_id = GENESIS, 0
    kid = key_id(public_key)
    for seal_id, at, p_hash, ranges, blob, head, s_kid, sig in conn.execute(
            "SELECT id, at_ms, prev_hash, ranges, row_hashes, head_hash, key_id, signature FROM seals ORDER BY id"):
        rep.seals += 1
        if seal_id != prev_id + 1:
            problem(f"seal {seal_id}: follows seal {prev_id} (seals {prev_id + 1}..{seal_id - 1} missing or renumbered)")
        if p_hash != prev_hash:
            problem(f"seal {seal_id}: prev_hash does not match seal {prev_id}'s head (chain broken: reordered, "
                    "removed or rewritten seal)")
        if seal_digest(p_hash, seal_id, at, ranges, bytes(blob)) != head:
            problem(f"seal {seal_id}: its content does not hash to its head_hash (seal rewritten)")
        try:
            public_key.verify(bytes.fromhex(sig), bytes.fromhex(head))
        except (InvalidSignature, ValueError):
            problem(f"seal {seal_id}: signature invalid for key {kid} (seal key {s_kid})")
        prev_hash, prev_id = head, seal_id
        try:
            tables = json.loads(ranges)
        except ValueError:
            problem(f"seal {seal_id}: ranges are not valid JSON")
            continue
        pos = 0
        for table in sorted(tables):
            r = tables[table]
            if r["to"] >= chain_through.get(table, (0, 0))[0]:
                chain_through[table] = (r["to"], seal_id)
            width = r.get("h")
            if table == STAGING:
                staging_index.append((seal_id, r["from"], r["to"], pos, r["rows"], width or 0))
            if width:
                if table == STAGING:
                    staging.append((r["from"] + 1, r["to"], seal_id, pos, width))
                else:
                    exp = expected.setdefault(table, {})
                    for k in range(r["rows"]):
                        exp[r["from"] + 1 + k] = (bytes(blob[pos + k * width:pos + (k + 1) * width]), seal_id)
                pos += r["rows"] * width
                continue
            target = staging_entries if table == STAGING else expected.setdefault(table, {})
            for _ in range(r["rows"]):
                rid, h = ENTRY.unpack_from(blob, pos)
                pos += ENTRY.size
                target[rid] = (h, seal_id)
    rep.head = prev_hash

    floors = dict(conn.execute("SELECT tbl, MAX(through_id) FROM retention_runs GROUP BY tbl").fetchall())
    present_tables = sealed_tables(conn)
    for table in present_tables:
        if table == STAGING:
            _verify_staging(conn, staging, staging_entries, rep, problem)
            continue
        exp = expected.get(table, {})
        top = max(exp) if exp else 0
        by_hash: dict[bytes, int] = {h: rid for rid, (h, _) in exp.items()}
        seen = set()
        for row in _rows(conn, table, 0):
            rid = row[0]
            if rid > top:
                rep.unsealed[table] = rep.unsealed.get(table, 0) + 1
                continue
            rep.rows_checked += 1
            seen.add(rid)
            h = row_hash(row[1:])
            if rid not in exp:
                problem(f"{table} id {rid}: row not in any seal (inserted after sealing)")
            elif exp[rid][0] != h[:len(exp[rid][0])]:
                other = by_hash.get(h)
                if other is not None and other != rid:
                    problem(f"{table} id {rid}: holds the content sealed as id {other} (reordered), seal {exp[rid][1]}")
                else:
                    problem(f"{table} id {rid}: content changed since seal {exp[rid][1]}")
        floor = floors.get(table, 0) or 0
        for rid, (_, sid) in exp.items():
            if rid not in seen and rid > floor:
                problem(f"{table} id {rid}: row deleted (sealed in seal {sid}, not removed by retention)")
    for table in set(expected) | ({STAGING} if staging or staging_entries else set()):
        if table not in present_tables:
            problem(f"table {table}: sealed but no longer in the ledger (dropped)")
    # The derived bookkeeping must agree with the chain (else a seal could skip rows).
    kept = {t: (to, sid) for t, to, sid in conn.execute("SELECT tbl, to_id, seal_id FROM seal_through")}
    if kept and kept != chain_through:
        for t in sorted(set(kept) | set(chain_through)):
            if kept.get(t) != chain_through.get(t):
                problem(f"seal_through {t}: says {kept.get(t)}, the chain says {chain_through.get(t)} "
                        "(bookkeeping edited; the next seal rebuilds it)")
    kept_staging = conn.execute("SELECT seal_id, from_id, to_id, hash_offset, n_rows, hash_bytes FROM staging_seals "
                                "ORDER BY seal_id").fetchall()
    want_staging = sorted(staging_index)
    if kept_staging != want_staging:
        diff = sorted(set(kept_staging) ^ set(want_staging))[:3]
        problem(f"staging_seals: does not match the chain (index edited, e.g. {diff}); compaction trusts it to find "
                "staged rows' seals")
    guard = conn.execute("SELECT tbl, through_id FROM retention_guard").fetchall()
    if guard:
        problem(f"retention_guard: holds {guard[:3]} outside retention's transaction (it would let rows be deleted)")
    _verify_static(conn, problem)
    return rep


def _verify_staging(conn: sqlite3.Connection, staging: list, entries: dict, rep: VerifyReport, problem) -> None:
    """flow_staging: each row against its seal; each sealed row present or consumed by a sealed compaction."""
    starts = [s[0] for s in staging]
    blobs: dict[int, bytes] = {}
    top = max([s[1] for s in staging] + list(entries) + [0])
    consumed_by: list[tuple[int, int, int]] = []  # (first, last, compaction id)
    for cid, blob in conn.execute("SELECT id, consumed FROM flow_compactions ORDER BY id"):
        try:
            consumed_by += [(a, b, cid) for a, b in unpack_ranges(bytes(blob))]
        except ValueError:
            problem(f"flow_compactions id {cid}: consumed ranges are damaged")
    consumed = _merge([(a, b) for a, b, _ in consumed_by])
    c_starts = [a for a, _ in consumed]
    seen: set[int] = set()
    for row in _rows(conn, STAGING, 0):
        rid = row[0]
        if rid > top:
            rep.unsealed[STAGING] = rep.unsealed.get(STAGING, 0) + 1
            continue
        rep.rows_checked += 1
        seen.add(rid)
        exp = entries.get(rid)
        if exp is None:
            i = bisect.bisect_right(starts, rid) - 1
            if i >= 0 and staging[i][0] <= rid <= staging[i][1]:
                first, _, sid, pos, width = staging[i]
                if sid not in blobs:
                    blobs[sid] = bytes(conn.execute("SELECT row_hashes FROM seals WHERE id = ?", [sid]).fetchone()[0])
                at = pos + (rid - first) * width
                exp = (blobs[sid][at:at + width], sid)
        if exp is None:
            problem(f"{STAGING} id {rid}: row not in any seal (inserted after sealing)")
        elif row_hash(row[1:])[:len(exp[0])] != exp[0]:
            problem(f"{STAGING} id {rid}: content changed since seal {exp[1]}")
        elif _in_ranges(consumed, c_starts, rid):
            cid = next(c for a, b, c in consumed_by if a <= rid <= b)
            problem(f"{STAGING} id {rid}: still staged although compaction {cid} consumed it (flow counted twice)")
    # Every sealed staged row must be present or consumed: walk the sealed ranges minus consumed.
    sealed_ranges = [(a, b, sid) for a, b, sid, _, _ in staging] + [(rid, rid, sid) for rid, (_, sid) in entries.items()]
    for a, b, sid in sealed_ranges:
        rid = a
        while rid <= b:
            i = bisect.bisect_right(c_starts, rid) - 1
            if i >= 0 and consumed[i][0] <= rid <= consumed[i][1]:
                rid = consumed[i][1] + 1
                continue
            if rid not in seen:
                problem(f"{STAGING} id {rid}: row deleted (sealed in seal {sid}, not consumed by any compaction)")
            rid += 1


def _verify_static(conn: sqlite3.Connection, problem) -> None:
    """Exempt tables that the migrations define completely must equal what they define."""
    fresh = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(fresh)
        for table in STATIC_TABLES:
            want = fresh.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
            have = conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
            if want != have:
                extra = sorted(set(have) - set(want), key=repr)
                missing = sorted(set(want) - set(have), key=repr)
                problem(f"{table}: differs from what the migrations define (added or changed {extra[:3]}, "
                        f"missing {missing[:3]})")
    finally:
        fresh.close()
