"""Conntrack NEW/DESTROY events straight off a NETLINK_NETFILTER socket, parsed with struct.

Why not pyroute2 here: its generic decoder walks every attribute list on each `get_attr`
and cost about 400 us per event (bench/RESULTS.md), so a burst overflowed the socket. This
module reads only the attributes the ledger keeps, at a few microseconds per event, and
tests/test_ctevents.py checks it against pyroute2's decoding of the same kernel messages.

Reliability: the socket sets NETLINK_BROADCAST_ERROR, as conntrackd's
NetlinkEventsReliable does. Then when the kernel cannot queue a DESTROY event for us it
keeps the conntrack entry on its dying list and delivers the event again later, so a
finished flow (which carries all we keep: tuples, start/stop times, byte counters) is not
lost to a full buffer. NEW events are not redelivered; a lost NEW only means an open flow
is not visible until it ends. Every message the kernel failed to queue is counted in the
socket's `Drops` column of /proc/net/netlink, which `kernel_drops()` reads.
"""
from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_BROADCAST_ERROR = 4
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
NFNLGRP_CONNTRACK_NEW = 0x1
NFNLGRP_CONNTRACK_DESTROY = 0x4
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x10, 0x300
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3

# Attribute numbers from linux/netfilter/nfnetlink_conntrack.h.
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY = 1, 2, 9, 10
CTA_ID, CTA_TIMESTAMP = 12, 20
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_IP_V6_SRC, CTA_IP_V6_DST = 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT, CTA_PROTO_ICMP_ID = 1, 2, 3, 4
CTA_COUNTERS_BYTES, CTA_COUNTERS32_BYTES = 2, 4
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2
NLA_TYPE_MASK = 0x3FFF  # drops NLA_F_NESTED and NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid: host byte order
_NFGENMSG = struct.Struct("=BBH")    # family, version, res_id (res_id is big-endian; unused)
_NLA = struct.Struct("=HH")
_U8 = struct.Struct("B")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_HDR_LEN = _NLMSGHDR.size + _NFGENMSG.size

KIND_NEW, KIND_DESTROY, KIND_OTHER = "new", "destroy", "other"


class MalformedMessage(ValueError):
    """A netlink message whose lengths do not add up; names the offset and what was wrong."""


def _attrs(buf: bytes, pos: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type -> (payload offset, payload length) for one level of netlink attributes."""
    out: dict[int, tuple[int, int]] = {}
    unpack = _NLA.unpack_from
    while pos + 4 <= end:
        nla_len, nla_type = unpack(buf, pos)
        if nla_len < 4 or pos + nla_len > end:
            raise MalformedMessage(f"attribute at byte {pos} claims {nla_len} bytes, {end - pos} left")
        out[nla_type & NLA_TYPE_MASK] = (pos + 4, nla_len - 4)
        pos += (nla_len + 3) & ~3
    return out


def _u(fmt: struct.Struct, buf: bytes, where: tuple[int, int] | None) -> int | None:
    if where is None:
        return None
    off, size = where
    if size < fmt.size:
        raise MalformedMessage(f"attribute at byte {off - 4} has {size} bytes, needs {fmt.size}")
    return fmt.unpack_from(buf, off)[0]


def _tuple(buf: bytes, where: tuple[int, int] | None, v6: bool = False) -> tuple | None:
    """(src ip, dst ip, proto, sport, dport): IPv4 addresses as integers, IPv6 as 16 bytes
    (ICMP: the id twice), or None if the address family's attributes are missing."""
    if where is None:
        return None
    off, size = where
    t = _attrs(buf, off, off + size)
    ip, pr = t.get(CTA_TUPLE_IP), t.get(CTA_TUPLE_PROTO)
    if ip is None or pr is None:
        return None
    a = _attrs(buf, ip[0], ip[0] + ip[1])
    if v6:
        src, dst = _addr6(buf, a.get(CTA_IP_V6_SRC)), _addr6(buf, a.get(CTA_IP_V6_DST))
    else:
        src, dst = _u(_BE32, buf, a.get(CTA_IP_V4_SRC)), _u(_BE32, buf, a.get(CTA_IP_V4_DST))
    if src is None or dst is None:
        return None
    p = _attrs(buf, pr[0], pr[0] + pr[1])
    num = _u(_U8, buf, p.get(CTA_PROTO_NUM)) or 0
    sport = _u(_BE16, buf, p.get(CTA_PROTO_SRC_PORT))
    if sport is None:
        # ICMP echo: the id names the mapping in both directions (NAT rewrites it like a port).
        icmp_id = _u(_BE16, buf, p.get(CTA_PROTO_ICMP_ID)) or 0
        return src, dst, num, icmp_id, icmp_id
    return src, dst, num, sport, _u(_BE16, buf, p.get(CTA_PROTO_DST_PORT)) or 0


def _addr6(buf: bytes, where: tuple[int, int] | None) -> bytes | None:
    if where is None:
        return None
    off, size = where
    if size < 16:
        raise MalformedMessage(f"attribute at byte {off - 4} has {size} bytes, needs 16")
    return bytes(buf[off:off + 16])


def is_client_address6(addr: bytes) -> bool:
    """False for IPv6 sources that are never a visitor's traffic: link-local, multicast, loopback, unspecified."""
    return not (addr[0] == 0xFF or (addr[0] == 0xFE and addr[1] & 0xC0 == 0x80) or addr[:15] == bytes(15))


def _bytes_counter(buf: bytes, where: tuple[int, int] | None) -> int:
    if where is None:
        return 0
    c = _attrs(buf, where[0], where[0] + where[1])
    big = _u(_BE64, buf, c.get(CTA_COUNTERS_BYTES))
    return big if big is not None else (_u(_BE32, buf, c.get(CTA_COUNTERS32_BYTES)) or 0)


def parse_message(buf: bytes, pos: int, end: int, now_ms: int,
                  nat_only: bool = True, ipv6: bool = False) -> tuple[str, tuple | None]:
    """One conntrack message (buf[pos:end], starting at its nlmsghdr) to (kind, row).

    kind is "new", "destroy" or "other" (not conntrack, or not IPv4 / IPv6); row is None
    when the flow is skipped (no tuples, not translated when nat_only) and otherwise a tuple
    in ledger.flows.STAGING_COLUMNS order: (ct_id, open, start_ms, end_ms, proto, src_ip,
    src_port, pub_ip, pub_port, dst_ip, dst_port, bytes_orig, bytes_reply, flags).
    With `ipv6`, IPv6 entries are rows too, their addresses 16-byte `bytes` (that is how a
    caller tells them apart); they are not translated, so nat_only does not apply, but
    link-local, multicast and loopback sources are skipped. Raises MalformedMessage.
    """
    if end - pos < _HDR_LEN:
        raise MalformedMessage(f"message at byte {pos} is {end - pos} bytes, shorter than its headers")
    _, mtype, _, _, _ = _NLMSGHDR.unpack_from(buf, pos)
    if mtype >> 8 != NFNL_SUBSYS_CTNETLINK:
        return KIND_OTHER, None
    kind = mtype & 0xFF
    if kind == IPCTNL_MSG_CT_NEW:
        label = KIND_NEW
    elif kind == IPCTNL_MSG_CT_DELETE:
        label = KIND_DESTROY
    else:
        return KIND_OTHER, None
    family = _NFGENMSG.unpack_from(buf, pos + _NLMSGHDR.size)[0]
    v6 = family == socket.AF_INET6
    if family != socket.AF_INET and not (v6 and ipv6):
        return KIND_OTHER, None
    top = _attrs(buf, pos + _HDR_LEN, end)
    orig, reply = _tuple(buf, top.get(CTA_TUPLE_ORIG), v6), _tuple(buf, top.get(CTA_TUPLE_REPLY), v6)
    if orig is None or reply is None:
        return label, None
    o_src, o_dst, proto, o_sport, o_dport = orig
    _, r_dst, _, _, r_dport = reply
    if v6:
        # IPv6 is not translated: the device's own address is what the server saw.
        if not is_client_address6(o_src):
            return label, None
    # The translation is in the reply tuple: the server answers the public address and port.
    elif nat_only and o_src == r_dst and o_sport == r_dport:
        return label, None
    start = stop = None
    ts = top.get(CTA_TIMESTAMP)
    if ts is not None:
        t = _attrs(buf, ts[0], ts[0] + ts[1])
        start, stop = _u(_BE64, buf, t.get(CTA_TIMESTAMP_START)), _u(_BE64, buf, t.get(CTA_TIMESTAMP_STOP))
    start_ms = start // 1_000_000 if start else now_ms
    ct_id = _u(_BE32, buf, top.get(CTA_ID))
    if label == KIND_NEW:
        return label, (ct_id, 1, start_ms, None, proto, o_src, o_sport, r_dst, r_dport, o_dst, o_dport, 0, 0, 0)
    end_ms = max(stop // 1_000_000 if stop else now_ms, start_ms)
    return label, (ct_id, 0, start_ms, end_ms, proto, o_src, o_sport, r_dst, r_dport, o_dst, o_dport,
                   _bytes_counter(buf, top.get(CTA_COUNTERS_ORIG)), _bytes_counter(buf, top.get(CTA_COUNTERS_REPLY)),
                   0)


def split_messages(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of each netlink message in one datagram; raises MalformedMessage."""
    out = []
    pos, n = 0, len(buf)
    while pos + _NLMSGHDR.size <= n:
        length = _NLMSGHDR.unpack_from(buf, pos)[0]
        if length < _NLMSGHDR.size or pos + length > n:
            raise MalformedMessage(f"netlink message at byte {pos} claims {length} bytes, datagram has {n - pos}")
        out.append((pos, pos + length))
        pos += (length + 3) & ~3
    if n - pos >= 4:  # less than 4 left is alignment padding
        raise MalformedMessage(f"{n - pos} bytes at byte {pos} are too short for a netlink message")
    return out


class ConntrackSubscription:
    """A non-blocking netlink socket subscribed to conntrack NEW and DESTROY events.

    Raises OSError when the kernel refuses (no CAP_NET_ADMIN, no nf_conntrack_netlink).
    """

    def __init__(self, rcvbuf: int = 64 << 20, groups: int = NFNLGRP_CONNTRACK_NEW | NFNLGRP_CONNTRACK_DESTROY,
                 reliable: bool = True) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  NETLINK_NETFILTER)
        try:
            try:
                # FORCE goes past net.core.rmem_max, which is global and not ours to raise.
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if reliable:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_BROADCAST_ERROR, 1)
                # With redelivery, ENOBUFS no longer means "events lost": drops are read
                # from /proc/net/netlink instead of interrupting every recv.
                self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            self.sock.bind((0, groups))
        except OSError:
            self.sock.close()
            raise
        self.reliable = reliable
        self.inode = os.fstat(self.sock.fileno()).st_ino

    def fileno(self) -> int:
        """The socket's descriptor, for select/poll."""
        return self.sock.fileno()

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted (it doubles the request for bookkeeping)."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def receive(self, limit: int) -> list[bytes]:
        """Up to `limit` datagrams already queued, without blocking (each is one event).

        ENOBUFS (only without `reliable`) is raised as OSError for the caller to count.
        """
        out = []
        recv = self.sock.recv
        try:
            for _ in range(limit):
                out.append(recv(65536))
        except BlockingIOError:
            pass
        except OSError:
            if out:
                return out  # the error stays pending and is raised on the next call
            raise
        return out

    def kernel_drops(self) -> int | None:
        """Messages the kernel failed to queue on this socket (sk_drops), or None if unreadable."""
        return read_netlink_drops(self.inode)

    def close(self) -> None:
        """Close the socket (the kernel forgets the subscription)."""
        self.sock.close()


def read_netlink_drops(inode: int, path: Path = Path("/proc/net/netlink")) -> int | None:
    """The Drops column of the /proc/net/netlink row for the socket with this inode."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    header = lines[0].split() if lines else []
    if "Drops" not in header or "Inode" not in header:
        return None
    i_drops, i_inode = header.index("Drops"), header.index("Inode")
    for line in lines[1:]:
        cols = line.split()
        if len(cols) > max(i_drops, i_inode) and cols[i_inode] == str(inode):
            return int(cols[i_drops])
    return None


class DumpError(OSError):
    """The kernel refused or broke off a conntrack table dump; the message says why."""


def dump_request(seq: int, family: int = socket.AF_INET) -> bytes:
    """An IPCTNL_MSG_CT_GET dump request for every conntrack entry of `family`."""
    body = _NFGENMSG.pack(family, 0, 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def dump_conntrack(now_ms: int, nat_only: bool = True, family: int = socket.AF_INET,
                   timeout: float = 30.0) -> tuple[list[tuple], dict]:
    """Every entry of `family` in this namespace's conntrack table, as staging rows of open flows.

    The flow logger calls it at start, after subscribing, so flows that opened while it was
    down (whose NEW events are gone for good) are recorded. Rows are in STAGING_COLUMNS order,
    exactly as parse_message makes them for NEW events (IPv6 ones with 16-byte addresses, as
    with ipv6=True; start from the kernel's timestamp when
    nf_conntrack_timestamp was on, else `now_ms`). The dump is read on its own socket: the
    kernel fills it only as we read, so nothing is dropped. Returns (rows, counts); raises
    DumpError when the kernel answers with an error or the dump does not finish in time.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    rows: list[tuple] = []
    counts = {"entries": 0, "skipped": 0, "interrupted": False}
    try:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "little") or 1
        sock.send(dump_request(seq, family))
        while True:
            try:
                datagram = sock.recv(1 << 20)
            except socket.timeout:
                raise DumpError(f"conntrack dump: no end after {timeout} s ({counts['entries']} entries read)") from None
            for start, end in split_messages(datagram):
                _, mtype, flags, mseq, _ = _NLMSGHDR.unpack_from(datagram, start)
                if mseq != seq:
                    continue
                if flags & NLM_F_DUMP_INTR:
                    counts["interrupted"] = True  # the table changed under the dump; entries may repeat
                if mtype == NLMSG_DONE:
                    return rows, counts
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", datagram, start + _NLMSGHDR.size)[0]
                    if err == 0:
                        continue
                    raise DumpError(f"conntrack dump refused: {os.strerror(err)} (needs CAP_NET_ADMIN in the "
                                    "box's namespace and nf_conntrack_netlink)")
                if mtype == NLMSG_NOOP:
                    continue
                kind, row = parse_message(datagram, start, end, now_ms, nat_only, family == socket.AF_INET6)
                if kind != KIND_NEW:
                    continue
                counts["entries"] += 1
                if row is None:
                    counts["skipped"] += 1
                else:
                    rows.append(row)
    finally:
        sock.close()
