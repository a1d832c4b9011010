"""The NAT flow logger: conntrack NEW/DESTROY events over netlink (pyroute2) into the ledger.

Run it inside the box's network namespace (`ip netns exec BOXNS skillspot ledger flowlog`).
It turns on conntrack accounting and timestamps, asks for a large receive buffer
(SO_RCVBUFFORCE), counts every ENOBUFS as loss (the kernel dropped events we will never
see), and writes events to the ledger many per transaction. Once a minute it samples the
clock (chrony), compacts finished flows into segments, seals, and checks the disk.
"""
from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket

from ledger.clock import read_chrony, record_clock
from ledger.db import Ledger, LedgerError
from ledger.flows import FlowEvent, compact, stage
from ledger.records import log_event
from ledger.retention import disk_check
from ledger.seal import load_or_create_key, seal

NFNLGRP_CONNTRACK_NEW = 0x1
NFNLGRP_CONNTRACK_DESTROY = 0x4
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_DELETE = 2
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SYSCTLS = {"net/netfilter/nf_conntrack_acct": "1", "net/netfilter/nf_conntrack_timestamp": "1"}


@dataclass
class Stats:
    """Counters the logger keeps; written to --stats-file and to the event log at exit."""

    new: int = 0
    destroy: int = 0
    stored: int = 0
    skipped_not_nat: int = 0
    skipped_other: int = 0
    enobufs: int = 0
    write_errors: int = 0
    started_ms: int = 0


def enable_conntrack_sysctls() -> list[str]:
    """Turn on accounting and timestamps in this namespace; returns what could not be set."""
    failed = []
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        try:
            path.write_text(value)
        except OSError as exc:
            failed.append(f"{key}: {exc.strerror}")
    return failed


def _ip(text: str) -> int:
    return int.from_bytes(socket.inet_aton(text), "big")


def _tuple(msg, name: str) -> tuple[str, str, int, int, int] | None:
    t = msg.get_attr(name)
    if t is None:
        return None
    ip = t.get_attr("CTA_TUPLE_IP")
    proto = t.get_attr("CTA_TUPLE_PROTO")
    if ip is None or proto is None:
        return None
    src, dst = ip.get_attr("CTA_IP_V4_SRC"), ip.get_attr("CTA_IP_V4_DST")
    if src is None or dst is None:
        return None
    num = proto.get_attr("CTA_PROTO_NUM")
    sport = proto.get_attr("CTA_PROTO_SRC_PORT") or proto.get_attr("CTA_PROTO_ICMP_ID") or 0
    dport = proto.get_attr("CTA_PROTO_DST_PORT") or 0
    return src, dst, num, sport, dport


def _bytes(msg, name: str) -> int:
    c = msg.get_attr(name)
    if c is None:
        return 0
    return c.get_attr("CTA_COUNTERS_BYTES") or c.get_attr("CTA_COUNTERS32_BYTES") or 0


def parse_event(msg, now_ms: int, nat_only: bool = True) -> tuple[str, FlowEvent | None]:
    """One netlink message to ('new'|'destroy'|'other', FlowEvent or None when skipped)."""
    kind = msg["header"]["type"] & 0xFF
    if kind == IPCTNL_MSG_CT_NEW:
        label = "new"
    elif kind == IPCTNL_MSG_CT_DELETE:
        label = "destroy"
    else:
        return "other", None
    orig, reply = _tuple(msg, "CTA_TUPLE_ORIG"), _tuple(msg, "CTA_TUPLE_REPLY")
    if orig is None or reply is None:
        return label, None
    o_src, o_dst, proto, o_sport, o_dport = orig
    r_src, r_dst, _, r_sport, r_dport = reply
    # The translation is in the reply tuple: the server answers the public address and port.
    if nat_only and o_src == r_dst and o_sport == r_dport:
        return label, None
    ts = msg.get_attr("CTA_TIMESTAMP")
    start = stop = None
    if ts is not None:
        start, stop = ts.get_attr("CTA_TIMESTAMP_START"), ts.get_attr("CTA_TIMESTAMP_STOP")
    start_ms = start // 1_000_000 if start else now_ms
    if label == "new":
        return label, FlowEvent(msg.get_attr("CTA_ID"), 1, start_ms, None, proto, _ip(o_src), o_sport, _ip(r_dst),
                                r_dport, _ip(o_dst), o_dport, 0, 0)
    end_ms = stop // 1_000_000 if stop else now_ms
    return label, FlowEvent(msg.get_attr("CTA_ID"), 0, start_ms, max(end_ms, start_ms), proto, _ip(o_src), o_sport,
                            _ip(r_dst), r_dport, _ip(o_dst), o_dport, _bytes(msg, "CTA_COUNTERS_ORIG"),
                            _bytes(msg, "CTA_COUNTERS_REPLY"))


class FlowLogger:
    """Subscribes to conntrack events and stores them; run() until stop() or a signal."""

    def __init__(self, ledger: Ledger, data_dir: Path, alert_percent: int, rcvbuf: int = 64 << 20,
                 batch: int = 5000, flush_seconds: float = 0.5, housekeeping_seconds: float = 60.0,
                 nat_only: bool = True, stats_file: Path | None = None, ready_file: Path | None = None) -> None:
        self.ledger, self.data_dir, self.alert_percent = ledger, data_dir, alert_percent
        self.rcvbuf, self.batch, self.flush_seconds = rcvbuf, batch, flush_seconds
        self.housekeeping_seconds, self.nat_only = housekeeping_seconds, nat_only
        self.stats_file, self.ready_file = stats_file, ready_file
        self.stats = Stats(started_ms=ledger.now_ms())
        self.pending: list[FlowEvent] = []
        self.key = load_or_create_key(data_dir)
        self._stop = asyncio.Event()

    def flush(self) -> None:
        """Write pending events; on failure keep them in memory and say so (never drop silently)."""
        if not self.pending:
            return
        try:
            stage(self.ledger, self.pending)
        except LedgerError as exc:
            self.stats.write_errors += 1
            print(f"skillspot flowlog: {exc}; keeping {len(self.pending)} events in memory and retrying",
                  file=sys.stderr)
            return
        self.stats.stored += len(self.pending)
        self.pending = []

    def write_stats(self) -> None:
        """Write the counters as JSON (atomically) for monitoring, tests and the bench."""
        if self.stats_file:
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self.stats)))
            tmp.replace(self.stats_file)

    def housekeeping(self) -> None:
        """Clock sample, compaction, seal, disk check (each failure reported, none fatal)."""
        for step in (lambda: record_clock(self.ledger, read_chrony()), lambda: compact(self.ledger),
                     lambda: seal(self.ledger, self.key),
                     lambda: disk_check(self.ledger, self.data_dir, self.alert_percent)):
            try:
                step()
            except (LedgerError, OSError) as exc:
                print(f"skillspot flowlog: housekeeping: {exc}", file=sys.stderr)

    async def _ticker(self) -> None:
        last_house = 0.0
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.flush_seconds)
            except asyncio.TimeoutError:
                pass
            self.flush()
            self.write_stats()
            if time.monotonic() - last_house >= self.housekeeping_seconds:
                last_house = time.monotonic()
                self.housekeeping()

    async def _receive(self, sock: AsyncNFCTSocket) -> None:
        while not self._stop.is_set():
            try:
                async for msg in sock.get():
                    if msg.get("nfgen_family", socket.AF_INET) != socket.AF_INET:
                        self.stats.skipped_other += 1
                        continue
                    label, ev = parse_event(msg, self.ledger.now_ms(), self.nat_only)
                    if label == "new":
                        self.stats.new += 1
                    elif label == "destroy":
                        self.stats.destroy += 1
                    if ev is None:
                        if label != "other":
                            self.stats.skipped_not_nat += 1
                        continue
                    self.pending.append(ev)
                    if len(self.pending) >= self.batch:
                        self.flush()
            except (NetlinkError, OSError) as exc:
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                if code == errno.ENOBUFS:
                    # The kernel dropped events: count it, make it visible, keep listening.
                    self.stats.enobufs += 1
                    print("skillspot flowlog: ENOBUFS, conntrack events were lost", file=sys.stderr)
                    continue
                if self._stop.is_set():
                    return
                raise

    async def run(self) -> Stats:
        """Listen until stop(); returns the final counters."""
        failed = enable_conntrack_sysctls()
        if failed:
            print(f"skillspot flowlog: could not enable {failed}; bytes or times may be missing", file=sys.stderr)
        sock = AsyncNFCTSocket(rcvbuf=1 << 20)
        await sock.setup_endpoint()
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        await sock.bind(groups=NFNLGRP_CONNTRACK_NEW | NFNLGRP_CONNTRACK_DESTROY)
        log_event(self.ledger, "flowlog_start", None, rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                  sysctl_failures=failed)
        if self.ready_file:
            self.ready_file.write_text("ready")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        receiver = asyncio.create_task(self._receive(sock))
        ticker = asyncio.create_task(self._ticker())
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if receiver.done() and receiver.exception() is not None:
            self.stop()
            self.flush()
            self.write_stats()
            log_event(self.ledger, "flowlog_error", None, error=str(receiver.exception()), **asdict(self.stats))
            raise LedgerError(f"conntrack subscription failed: {receiver.exception()}")
        # Drain what the kernel already queued before closing, so a stop loses nothing.
        await asyncio.sleep(0.2)
        receiver.cancel()
        await asyncio.gather(receiver, ticker, return_exceptions=True)
        sock.close()
        self.flush()
        self.write_stats()
        log_event(self.ledger, "flowlog_stop", None, **asdict(self.stats))
        return self.stats

    def stop(self) -> None:
        """Ask run() to finish (flushes everything first)."""
        self._stop.set()
