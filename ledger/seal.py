"""Sealing: a SHA-256 hash chain over every append-only table, signed with the box's Ed25519 key.

Which tables are sealed is discovered, not listed: every table in the file is sealed except
the few named in UNSEALED_TABLES (transient or internal). A table added by a later
migration therefore joins the chain at the next seal without any code change; it must be a
rowid table (`id INTEGER PRIMARY KEY`) that is only appended to.

Each seal stores, for every row it covers, the row id and a 16-byte SHA-256 of the row's
content (not its id), so `verify` can name the exact row that was changed, deleted,
inserted or moved to another id.
"""
from __future__ import annotations

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

from ledger.db import Ledger, LedgerError

UNSEALED_TABLES = frozenset({"seals", "flow_staging", "retention_guard", "ledger_retention"})
GENESIS = "0" * 64
ROW_HASH_BYTES = 16
ENTRY = struct.Struct(f"<q{ROW_HASH_BYTES}s")
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
                          "'id INTEGER PRIMARY KEY' or add it to ledger.seal.UNSEALED_TABLES")
    return [c for c in cols if c != "id"]


def row_hash(values: tuple) -> bytes:
    """SHA-256 (truncated) of a row's content, type-tagged so 1, '1' and b'1' differ."""
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


def _sealed_through(conn: sqlite3.Connection) -> dict[str, int]:
    through: dict[str, int] = {}
    for (ranges,) in conn.execute("SELECT ranges FROM seals ORDER BY id"):
        for table, r in json.loads(ranges).items():
            through[table] = max(through.get(table, 0), r["to"])
    return through


def seal(ledger: Ledger, key: Ed25519PrivateKey) -> dict | None:
    """Seal every row appended since the last seal; returns the new seal (None if nothing new)."""
    conn = ledger.db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        through = _sealed_through(conn)
        ranges: dict[str, dict] = {}
        blob = bytearray()
        for table in sealed_tables(conn):
            start = through.get(table, 0)
            n, last = 0, start
            for row in _rows(conn, table, start):
                blob += ENTRY.pack(row[0], row_hash(row[1:]))
                n, last = n + 1, row[0]
            if n:
                ranges[table] = {"from": start, "to": last, "rows": n}
        if not ranges:
            conn.execute("ROLLBACK")
            return None
        prev = conn.execute("SELECT id, head_hash FROM seals ORDER BY id DESC LIMIT 1").fetchone()
        seal_id = (prev[0] + 1) if prev else 1
        prev_hash = prev[1] if prev else GENESIS
        at = ledger.now_ms()
        ranges_json = json.dumps(ranges, sort_keys=True, separators=(",", ":"))
        head = seal_digest(prev_hash, seal_id, at, ranges_json, bytes(blob))
        sig = key.sign(bytes.fromhex(head)).hex()
        conn.execute("INSERT INTO seals (id, at_ms, prev_hash, ranges, row_hashes, head_hash, key_id, signature) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (seal_id, at, prev_hash, ranges_json, bytes(blob), head, key_id(key.public_key()), sig))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise LedgerError(f"sealing failed in {ledger.path}: {exc}") from exc
    return {"id": seal_id, "head_hash": head, "tables": ranges}


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


def verify(ledger: Ledger, public_key: Ed25519PublicKey, max_problems: int = 1000) -> VerifyReport:
    """Check the chain, every signature and every sealed row; name each discrepancy."""
    conn = ledger.db.conn
    rep = VerifyReport()

    def problem(msg: str) -> None:
        if len(rep.problems) < max_problems:
            rep.problems.append(msg)

    expected: dict[str, dict[int, tuple[bytes, int]]] = {}
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
            for _ in range(tables[table]["rows"]):
                rid, h = ENTRY.unpack_from(blob, pos)
                pos += ENTRY.size
                expected.setdefault(table, {})[rid] = (h, seal_id)
    rep.head = prev_hash

    floors = dict(conn.execute("SELECT tbl, MAX(through_id) FROM retention_runs GROUP BY tbl").fetchall())
    for table in sealed_tables(conn):
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
            elif exp[rid][0] != h:
                other = by_hash.get(h)
                if other is not None and other != rid:
                    problem(f"{table} id {rid}: holds the content sealed as id {other} (reordered), seal {exp[rid][1]}")
                else:
                    problem(f"{table} id {rid}: content changed since seal {exp[rid][1]}")
        floor = floors.get(table, 0) or 0
        for rid, (_, sid) in exp.items():
            if rid not in seen and rid > floor:
                problem(f"{table} id {rid}: row deleted (sealed in seal {sid}, not removed by retention)")
    for table in expected:
        if table not in sealed_tables(conn):
            problem(f"table {table}: sealed but no longer in the ledger (dropped)")
    return rep
