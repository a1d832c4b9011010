"""Compressed columnar segments of NAT flows: the compact on-disk form of flow records.

A segment holds up to a few thousand finished flows sorted by (public port, start). Each
column is a fixed-width little-endian array; the arrays are concatenated and compressed
with zlib. Sorting by public port makes that column nearly constant-step and lets a lookup
bisect it after one decompression; storing the private source port as XOR with the public
port turns it into zeros when masquerade kept the port (the common case).
"""
from __future__ import annotations

import bisect
import sys
import zlib
from array import array
from dataclasses import dataclass

CODEC_ZLIB_V1 = 1
# (field, array typecode); the order is the on-disk order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pub_port", "H"), ("port_xor", "H"), ("start_off", "L"), ("duration", "L"),
    ("proto", "B"), ("flags", "B"), ("src_ip", "L"), ("pub_ip", "L"), ("dst_ip", "L"),
    ("dst_port", "H"), ("bytes_orig", "Q"), ("bytes_reply", "Q"),
)
FIELDS = ("start_ms", "end_ms", "proto", "src_ip", "src_port", "pub_ip", "pub_port",
          "dst_ip", "dst_port", "bytes_orig", "bytes_reply", "flags")
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Flow:
    """One finished NAT flow; addresses are IPv4 as unsigned integers, times Unix ms UTC."""

    start_ms: int
    end_ms: int
    proto: int
    src_ip: int
    src_port: int
    pub_ip: int
    pub_port: int
    dst_ip: int
    dst_port: int
    bytes_orig: int
    bytes_reply: int
    flags: int = 0


def _le(a: array) -> bytes:
    if sys.byteorder != "little":
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def encode(flows: list[Flow]) -> tuple[bytes, int]:
    """Encode flows into a segment blob; returns (blob, base start ms)."""
    if not flows:
        raise ValueError("a segment needs at least one flow")
    flows = sorted(flows, key=lambda f: (f.pub_port, f.start_ms))
    base = min(f.start_ms for f in flows)
    cols = {name: array(code) for name, code in COLUMNS}
    for f in flows:
        if not 0 <= f.end_ms - f.start_ms <= U32 or f.start_ms - base > U32:
            raise ValueError(f"flow times out of range for a segment: {f}")
        cols["pub_port"].append(f.pub_port)
        cols["port_xor"].append(f.src_port ^ f.pub_port)
        cols["start_off"].append(f.start_ms - base)
        cols["duration"].append(f.end_ms - f.start_ms)
        cols["proto"].append(f.proto)
        cols["flags"].append(f.flags)
        cols["src_ip"].append(f.src_ip)
        cols["pub_ip"].append(f.pub_ip)
        cols["dst_ip"].append(f.dst_ip)
        cols["dst_port"].append(f.dst_port)
        cols["bytes_orig"].append(min(f.bytes_orig, U64))
        cols["bytes_reply"].append(min(f.bytes_reply, U64))
    return encode_columns(cols, base), base


def encode_columns(cols: dict[str, array], base: int) -> bytes:
    """Pack ready columns (already sorted by pub_port, start) into a segment blob.

    `encode` builds the columns from Flow objects; the bench generator builds them directly.
    """
    n = len(cols["pub_port"])
    if any(len(cols[name]) != n for name, _ in COLUMNS):
        raise ValueError("segment columns differ in length")
    raw = b"".join(_le(cols[name]) for name, _ in COLUMNS)
    return base.to_bytes(8, "little") + n.to_bytes(4, "little") + zlib.compress(raw, 9)


class Segment:
    """A decoded segment: columns as arrays, with lookups that avoid building every Flow."""

    def __init__(self, blob: bytes) -> None:
        self.base = int.from_bytes(blob[:8], "little")
        self.n = int.from_bytes(blob[8:12], "little")
        raw = zlib.decompress(blob[12:])
        self.cols: dict[str, array] = {}
        pos = 0
        for name, code in COLUMNS:
            a = array(code)
            size = a.itemsize * self.n
            a.frombytes(raw[pos:pos + size])
            if sys.byteorder != "little":
                a.byteswap()
            self.cols[name] = a
            pos += size
        if pos != len(raw):
            raise ValueError("segment length does not match its flow count")

    def flow(self, i: int) -> Flow:
        """The i-th flow (in segment order)."""
        c = self.cols
        start = self.base + c["start_off"][i]
        return Flow(start, start + c["duration"][i], c["proto"][i], c["src_ip"][i],
                    c["port_xor"][i] ^ c["pub_port"][i], c["pub_ip"][i], c["pub_port"][i],
                    c["dst_ip"][i], c["dst_port"][i], c["bytes_orig"][i], c["bytes_reply"][i],
                    c["flags"][i])

    def flows(self) -> list[Flow]:
        """Every flow of the segment."""
        return [self.flow(i) for i in range(self.n)]

    def by_public(self, pub_ip: int, pub_port: int, at_ms: int, slack_ms: int = 0) -> list[Flow]:
        """Flows that used pub_ip:pub_port at at_ms (start - slack <= at <= end + slack)."""
        ports = self.cols["pub_port"]
        lo = bisect.bisect_left(ports, pub_port)
        hi = bisect.bisect_right(ports, pub_port, lo)
        out = []
        for i in range(lo, hi):
            f = self.flow(i)
            if f.pub_ip == pub_ip and f.start_ms - slack_ms <= at_ms <= f.end_ms + slack_ms:
                out.append(f)
        return out
