"""Reading the keys of one nft set straight from the kernel over netlink, standard library only.

The sweeper reads the whole `active` set every pass to find idle devices. libnftables'
`list set` first fills its cache with every set of the table (four sets of 100,000 elements at
100,000 devices) and then formats each element as JSON: about 3.5 s of CPU per pass, measured.
Only the keys of one set are needed, so this asks the kernel for exactly that
(NFT_MSG_GETSETELEM, one dump) and reads the key bytes out of the answer: about a tenth of
the cost (bench numbers in the README).

The kernel's answer is a series of netlink messages; each holds a nested list of elements,
and each element a nested key whose value is the packed key: for `ether_addr . ipv4_addr`
the 6 address bytes padded to 8 (concatenated fields take whole 32-bit registers) and then
the 4 address bytes.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETSETELEM = 13
NFPROTO_INET = 1
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_DATA_VALUE = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NLA = struct.Struct("=HH")       # length, type
_NFGEN = 4                        # family, version, resource id


class SetDumpError(Exception):
    """The kernel refused the dump; the message names the set and the kernel's error."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length % 4)


def _attrs(buf: bytes, start: int, end: int):
    """(type, payload start, payload end) of each attribute in buf[start:end]."""
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(buf, start)
        if length < 4:
            break
        yield kind & NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def set_keys(table: str, set_name: str, family: int = NFPROTO_INET, tries: int = 3) -> set[bytes]:
    """The packed keys of every element of `family table set_name`, in one netlink dump (again,
    up to `tries` times, if the kernel marks the dump as interrupted by a change)."""
    for _ in range(tries):
        keys, interrupted = _dump(table, set_name, family)
        if not interrupted:
            break
    return keys


def _dump(table: str, set_name: str, family: int) -> tuple[set[bytes], bool]:
    request = (struct.pack("=BBH", family, 0, 0)
               + _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
               + _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"))
    keys: set[bytes] = set()
    interrupted = False
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        sock.send(_NLMSG.pack(_NLMSG.size + len(request), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        while True:
            buf = sock.recv(1 << 20)
            if not buf:
                raise SetDumpError(f"reading set {table} {set_name}: the kernel closed the dump")
            pos = 0
            while pos + _NLMSG.size <= len(buf):
                length, kind, flags, _seq, _pid = _NLMSG.unpack_from(buf, pos)
                if length < _NLMSG.size:
                    raise SetDumpError(f"reading set {table} {set_name}: a malformed netlink message")
                end = pos + length
                interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                if kind == NLMSG_DONE:
                    return keys, interrupted
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", buf, pos + _NLMSG.size)[0]
                    if code:
                        raise SetDumpError(f"reading set {table} {set_name}: {os.strerror(code)}"
                                           + (" (no such table or set)" if code == errno.ENOENT else ""))
                else:
                    _collect(buf, pos + _NLMSG.size + _NFGEN, end, keys)
                pos = (end + 3) & ~3


def _collect(buf: bytes, start: int, end: int, keys: set[bytes]) -> None:
    # Written as flat loops, not with _attrs: this runs once per element (100,000 per pass),
    # and the generator version cost twice as much.
    unpack = _NLA.unpack_from
    for kind, a, b in _attrs(buf, start, end):
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS:
            continue
        while a + 4 <= b:                      # each NFTA_LIST_ELEM
            length, elem_kind = unpack(buf, a)
            if length < 4:
                break
            c, d = a + 4, a + length
            a += (length + 3) & ~3
            if elem_kind & NLA_TYPE_MASK != NFTA_LIST_ELEM:
                continue
            while c + 4 <= d:                  # the element's fields: key, timeout, flags...
                length, field = unpack(buf, c)
                if length < 4:
                    break
                if field & NLA_TYPE_MASK == NFTA_SET_ELEM_KEY:
                    vlen, vkind = unpack(buf, c + 4)
                    if vkind & NLA_TYPE_MASK == NFTA_DATA_VALUE and vlen >= 4:
                        keys.add(buf[c + 8:c + 4 + vlen])
                    break
                c += (length + 3) & ~3


def mac_ipv4_key(mac: str, ip: str) -> bytes:
    """The packed key of (mac, ip) in an `ether_addr . ipv4_addr` set."""
    return bytes.fromhex(mac.replace(":", "")) + b"\0\0" + socket.inet_aton(ip)


def mac_ipv4_of(key: bytes) -> tuple[str, str]:
    """(mac, ip) from a packed `ether_addr . ipv4_addr` key."""
    return ":".join(f"{b:02x}" for b in key[:6]), socket.inet_ntoa(key[8:12])
