"""A small netfilter netlink client (standard library only) for the two hot kernel calls that
the tools do badly at scale: reading one nft set's keys (netcfg.setdump) and deleting a
device's conntrack entries (netcfg.fastpath). Everything else goes through libnftables.

A request is one netlink message: header, the netfilter generic header (family, version,
resource id) and attributes. A dump answers with many messages and ends with NLMSG_DONE; a
request with NLM_F_ACK is answered with NLMSG_ERROR carrying 0 or a negative errno.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Iterator

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x4, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA = struct.Struct("=HH")       # length, type
NFGEN = 4                        # family, version, resource id


class NetlinkError(OSError):
    """The kernel answered a request with an error; errno is set, the message says what was asked."""


def attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = NLA.size + len(payload)
    return NLA.pack(length, kind | (NLA_F_NESTED if nested else 0)) + payload + b"\0" * (-length % 4)


def attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in buf[start:end]."""
    while start + 4 <= end:
        length, kind = NLA.unpack_from(buf, start)
        if length < 4:
            break
        yield kind & NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def find(buf: bytes, start: int, end: int, kind: int) -> tuple[int, int] | None:
    """(payload start, end) of the first attribute of `kind` in buf[start:end], or None."""
    for k, a, b in attrs(buf, start, end):
        if k == kind:
            return a, b
    return None


class Netfilter:
    """One NETLINK_NETFILTER socket; use as a context manager."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0

    def __enter__(self) -> "Netfilter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def _send(self, msg_type: int, flags: int, family: int, payload: bytes) -> int:
        self._seq += 1
        body = struct.pack("=BBH", family, 0, 0) + payload
        self._sock.send(NLMSG.pack(NLMSG.size + len(body), msg_type, NLM_F_REQUEST | flags, self._seq, 0) + body)
        return self._seq

    def _messages(self, what: str) -> Iterator[tuple[bytes, int, int, int, int]]:
        """(buffer, type, flags, payload start, end) of each answer, until the caller stops."""
        while True:
            buf = self._sock.recv(1 << 20)
            if not buf:
                raise NetlinkError(0, f"{what}: the kernel closed the socket")
            pos = 0
            while pos + NLMSG.size <= len(buf):
                length, kind, flags, _seq, _pid = NLMSG.unpack_from(buf, pos)
                if length < NLMSG.size:
                    raise NetlinkError(0, f"{what}: a malformed netlink message")
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", buf, pos + NLMSG.size)[0]
                    if code:
                        raise NetlinkError(code, f"{what}: {os.strerror(code)}")
                yield buf, kind, flags, pos + NLMSG.size, pos + length
                pos = (pos + length + 3) & ~3

    def dump(self, msg_type: int, family: int, payload: bytes, what: str
             ) -> Iterator[tuple[bytes, int, int, int]]:
        """Each answer of a dump as (buffer, flags, attributes start, end); `what` names the
        request in errors."""
        self._send(msg_type, NLM_F_DUMP, family, payload)
        for buf, kind, flags, start, end in self._messages(what):
            if kind == NLMSG_DONE:
                return
            if kind != NLMSG_ERROR:
                yield buf, flags, start + NFGEN, end

    def ask(self, msg_type: int, family: int, payload: bytes, what: str) -> None:
        """Send one request and wait for the kernel's acknowledgement (NetlinkError if refused)."""
        self._send(msg_type, NLM_F_ACK, family, payload)
        for _buf, kind, _flags, _start, _end in self._messages(what):
            if kind == NLMSG_ERROR:
                return
