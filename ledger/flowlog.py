"""The NAT flow logger: conntrack NEW/DESTROY events over netlink into the ledger.

Run it inside the box's network namespace (`ip netns exec BOXNS skillspot ledger flowlog`).
It turns on conntrack accounting and timestamps, subscribes with a large receive buffer and
reliable DESTROY delivery (ledger.ctevents), and writes events to the ledger many per
transaction. One thread, one poll loop: receiving never waits on anything but the socket,
and the kernel's queue absorbs the pauses while a batch is written. Once a minute it samples
the clock (chrony), compacts finished flows into segments, seals, and checks the disk.
"""
from __future__ import annotations

import errno
import json
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ledger.clock import read_chrony, record_clock
from ledger.ctevents import (KIND_DESTROY, KIND_NEW, ConntrackSubscription, MalformedMessage, parse_message,
                             split_messages)
from ledger.db import Ledger, LedgerError
from ledger.flows import compact, stage_rows
from ledger.records import log_event
from ledger.retention import disk_check
from ledger.seal import load_or_create_key, seal

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
    kernel_drops: int = 0  # messages the kernel failed to queue (DESTROYs among them are redelivered)
    malformed: int = 0
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
        self.pending: list[tuple] = []
        self.key = load_or_create_key(data_dir)
        self._stop = False

    def flush(self) -> None:
        """Write pending events; on failure keep them in memory and say so (never drop silently)."""
        if not self.pending:
            return
        try:
            stage_rows(self.ledger, self.pending)
        except LedgerError as exc:
            self.stats.write_errors += 1
            print(f"skillspot flowlog: {exc}; keeping {len(self.pending)} events in memory and retrying",
                  file=sys.stderr)
            return
        self.stats.stored += len(self.pending)
        self.pending = []

    def write_stats(self, sub: ConntrackSubscription | None = None) -> None:
        """Refresh the kernel's drop count and write the counters as JSON (atomically)."""
        if sub is not None:
            drops = sub.kernel_drops()
            if drops is not None and drops > self.stats.kernel_drops:
                print(f"skillspot flowlog: the kernel could not queue {drops - self.stats.kernel_drops} more "
                      "events (buffer full); DESTROY events are redelivered, NEW events are lost",
                      file=sys.stderr)
                self.stats.kernel_drops = drops
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

    def handle(self, datagram: bytes, now_ms: int) -> None:
        """Count and queue the events in one netlink datagram; a malformed one is counted, not fatal."""
        st = self.stats
        try:
            for start, end in split_messages(datagram):
                kind, row = parse_message(datagram, start, end, now_ms, self.nat_only)
                if kind == KIND_NEW:
                    st.new += 1
                elif kind == KIND_DESTROY:
                    st.destroy += 1
                else:
                    st.skipped_other += 1
                    continue
                if row is None:
                    st.skipped_not_nat += 1
                else:
                    self.pending.append(row)
        except MalformedMessage as exc:
            st.malformed += 1
            if st.malformed <= 10:
                print(f"skillspot flowlog: skipped a malformed netlink message: {exc}", file=sys.stderr)

    def drain(self, sub: ConntrackSubscription, until: float) -> None:
        """Receive and queue everything already waiting (bounded by the monotonic time `until`)."""
        while True:
            try:
                datagrams = sub.receive(self.batch)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    # Only without reliable delivery: the kernel dropped events. Count, keep going.
                    self.stats.enobufs += 1
                    continue
                raise
            if datagrams:
                now = self.ledger.now_ms()
                for d in datagrams:
                    self.handle(d, now)
                if len(self.pending) >= self.batch:
                    self.flush()
            if len(datagrams) < self.batch or time.monotonic() >= until:
                return

    def run(self) -> Stats:
        """Listen until stop() or SIGTERM/SIGINT; returns the final counters. Raises LedgerError."""
        failed = enable_conntrack_sysctls()
        if failed:
            print(f"skillspot flowlog: could not enable {failed}; bytes or times may be missing", file=sys.stderr)
        try:
            sub = ConntrackSubscription(self.rcvbuf)
        except OSError as exc:
            raise LedgerError(f"cannot subscribe to conntrack events: {exc.strerror or exc} (needs root in the box's "
                              "namespace and the nf_conntrack_netlink module)") from exc
        log_event(self.ledger, "flowlog_start", None, rcvbuf=sub.rcvbuf, reliable=sub.reliable,
                  sysctl_failures=failed)
        if self.ready_file:
            self.ready_file.write_text("ready")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        poller = select.poll()
        poller.register(sub.fileno(), select.POLLIN)
        next_flush = time.monotonic() + self.flush_seconds
        next_house = time.monotonic()
        error: OSError | None = None
        try:
            try:
                while not self._stop:
                    poller.poll(max(0.0, next_flush - time.monotonic()) * 1000)
                    self.drain(sub, next_flush)
                    now = time.monotonic()
                    if now >= next_flush:
                        self.flush()
                        self.write_stats(sub)
                        next_flush = now + self.flush_seconds
                    if now >= next_house:
                        self.housekeeping()
                        next_house = time.monotonic() + self.housekeeping_seconds
                # Take what the kernel already queued before closing, so a stop loses nothing.
                time.sleep(0.2)
                self.drain(sub, time.monotonic() + 30)
            except OSError as exc:
                error = exc
            self.flush()
            self.write_stats(sub)
        finally:
            sub.close()
        if error is not None:
            log_event(self.ledger, "flowlog_error", None, error=str(error), **asdict(self.stats))
            raise LedgerError(f"conntrack subscription failed: {error}") from error
        log_event(self.ledger, "flowlog_stop", None, **asdict(self.stats))
        return self.stats

    def stop(self) -> None:
        """Ask run() to finish (it drains and flushes everything first)."""
        self._stop = True
