"""The upload batch: what a box sends, how it is hashed, chained and compressed.

A batch is one canonical JSON document (sorted keys, no spaces, UTF-8):

    {"format": "skillspot-batch-v1", "box_id": ..., "seq": N, "prev_hash": H(N-1),
     "created_ms": ..., "tables": {TABLE: {"from": ID, "to": ID, "columns": [...], "rows": [[...]]}}}

- `seq` starts at 1 and has no gaps; `prev_hash` is the hash of batch N-1 (GENESIS for 1),
  so the centre can prove that nothing is missing and nothing was reordered.
- The batch hash is SHA-256 of those exact JSON bytes (it covers seq and prev_hash).
- "from"/"to" per table: the box row ids the batch covers, (from, to] — the high-water marks.
- Compression: gzip level 1 (mtime 0 so the same batch always compresses to the same bytes).
  gzip is in every Python's standard library, so the box needs no compiled extra. Measured on
  a 50,000-flow batch (5.1 MB of JSON): level 1 -> 1.85 MB in 0.37 s, level 6 -> 1.60 MB in
  4.0 s (same loaded machine), zstd level 1 -> 1.49 MB in 0.29 s. Level 1 keeps a 7-day
  catch-up CPU-cheap on the box for 15% more bytes than level 6; zstd would save another 20%
  of bytes but adds a compiled dependency to every box for a link that is not the bottleneck.
The wire body is the gzip bytes; the request signature covers them (see signing.py).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import zlib

FORMAT = "skillspot-batch-v1"
GENESIS = "0" * 64
CONTENT_TYPE = "application/vnd.skillspot.batch.v1+gzip"
H_HASH = "X-Skillspot-Batch-Hash"
MAX_BODY_BYTES = 64 << 20            # compressed, on the wire
MAX_PAYLOAD_BYTES = 512 << 20        # decompressed: refuse a zip bomb before it fills memory
COMPRESS_LEVEL = 1


class BatchError(ValueError):
    """A batch that cannot be read; `code` is machine-readable, str() names the problem."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(payload: dict) -> bytes:
    """Canonical JSON bytes of a batch payload (the bytes the batch hash covers)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def batch_hash(payload_bytes: bytes) -> str:
    """The batch hash: SHA-256 of the canonical JSON, hex."""
    return hashlib.sha256(payload_bytes).hexdigest()


def build(box_id: str, seq: int, prev_hash: str, created_ms: int, tables: dict[str, dict]) -> tuple[bytes, str, bytes]:
    """(canonical JSON, batch hash, compressed wire body) for one batch."""
    if seq < 1:
        raise ValueError("seq starts at 1")
    raw = encode({"format": FORMAT, "box_id": box_id, "seq": seq, "prev_hash": prev_hash,
                  "created_ms": created_ms, "tables": tables})
    return raw, batch_hash(raw), compress(raw)


def compress(raw: bytes) -> bytes:
    """gzip with a fixed header time, so equal input gives equal bytes."""
    return gzip.compress(raw, compresslevel=COMPRESS_LEVEL, mtime=0)


def decompress(body: bytes, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """gunzip with a size limit; BatchError('bad_body') on anything else."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BatchError("bad_body", f"body is not gzip: {exc}") from None
    if len(out) > limit:
        raise BatchError("too_large", f"batch is larger than {limit} bytes when decompressed")
    if not d.eof or d.unused_data:
        raise BatchError("bad_body", "gzip body is truncated or has trailing data")
    return out


def parse(body: bytes) -> tuple[dict, str]:
    """Decompress and parse a wire body; returns (payload, hash of its JSON). BatchError on bad input."""
    raw = decompress(body)
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise BatchError("bad_body", f"batch is not JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BatchError("bad_body", f"batch format must be {FORMAT!r}")
    for key, typ in (("box_id", str), ("seq", int), ("prev_hash", str), ("created_ms", int), ("tables", dict)):
        if not isinstance(payload.get(key), typ) or isinstance(payload.get(key), bool):
            raise BatchError("bad_body", f"batch field {key!r} missing or not {typ.__name__}")
    for name, sec in payload["tables"].items():
        if not isinstance(sec, dict) or not isinstance(sec.get("columns"), list) or not isinstance(sec.get("rows"), list) \
                or not isinstance(sec.get("from"), int) or not isinstance(sec.get("to"), int):
            raise BatchError("bad_body", f"table section {name!r} needs from, to, columns and rows")
    return payload, batch_hash(raw)


def row_count(payload: dict) -> int:
    """Rows in a batch, over all tables."""
    return sum(len(sec["rows"]) for sec in payload["tables"].values())
