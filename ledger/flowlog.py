"""The NAT flow logger: conntrack NEW/DESTROY events over netlink into the ledger.

Run it inside the box's network namespace (`ip netns exec BOXNS skillspot ledger flowlog`).
It turns on conntrack accounting and timestamps, subscribes with a large receive buffer and
reliable DESTROY delivery (ledger.ctevents), and writes events to the ledger many per
transaction. One thread, one poll loop: receiving never waits on anything but the socket,
and the kernel's queue absorbs the pauses while a batch is written. Once a minute it samples
the clock (chrony), compacts finished flows into segments, seals, and checks the disk.

Integrity: staged rows are sealed in the transaction that writes them, at most every
`seal_seconds` (readers see only sealed staged rows, so that is also how long a new flow
may take to become visible to `who`; `skillspot ledger who` seals first).

Outages (ledger.gaps): each flush also rewrites a heartbeat row in the same transaction,
holding the time before the last receive that emptied the socket (every event queued
before it is stored), and an idle logger rewrites it every `heartbeat_seconds`. So after a
kill -9 the mark is at most one flush (or one tick, when idle) old, at the price of one
small UPDATE per transaction. At start, after subscribing, the logger dumps the conntrack
table (ledger.ctevents.dump_conntrack) and, in one sealed transaction, records the flows
open now that it has not seen, closes (end unknown) the ones it had seen open that are
gone, and writes the time from the old mark to the new subscription as a gap.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import sqlite3
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ledger.clock import read_chrony, record_clock
from ledger.ctevents import (KIND_DESTROY, KIND_NEW, ConntrackSubscription, DumpError, MalformedMessage,
                             dump_conntrack, parse_message, split_messages)
from ledger.db import Ledger, LedgerError
from ledger.flows import FLAG_END_UNKNOWN, FLAG_FROM_DUMP, FLAG_START_UNKNOWN, compact, stage_rows
from ledger.gaps import record_gap
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
    dumped: int = 0          # open flows recorded from the conntrack table at start
    dump_duplicates: int = 0  # NEW events dropped because the dump had recorded that flow
    closed_unseen: int = 0   # flows seen open before an outage and gone at start: closed, end unknown
    gap_ms: int = 0          # the outage before this run (0: none recorded)
    seals: int = 0
    stored6: int = 0          # IPv6 flow rows stored (ledger.flows6)
    mac_unknown6: int = 0     # of those, rows whose source had no neighbour-table entry


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
                 nat_only: bool = True, stats_file: Path | None = None, ready_file: Path | None = None,
                 seal_seconds: float = 5.0, heartbeat_seconds: float = 5.0, ipv6: bool = True) -> None:
        self.ledger, self.data_dir, self.alert_percent = ledger, data_dir, alert_percent
        self.rcvbuf, self.batch, self.flush_seconds = rcvbuf, batch, flush_seconds
        self.housekeeping_seconds, self.nat_only = housekeeping_seconds, nat_only
        self.stats_file, self.ready_file = stats_file, ready_file
        self.seal_seconds, self.heartbeat_seconds = seal_seconds, heartbeat_seconds
        self.stats = Stats(started_ms=ledger.now_ms())
        self.pending: list[tuple] = []
        self.pending6: list[tuple] = []  # IPv6 rows (addresses as bytes), written to flows6 with a MAC
        self.ipv6 = ipv6
        self._neighbours = None
        self.key = load_or_create_key(data_dir)
        self.run_id = uuid.uuid4().hex[:16]
        self.complete_ms = self.stats.started_ms  # every event queued before this is in `pending` or stored
        self.last_event_ms: int | None = None
        self.dumped_keys: set[tuple] | None = None
        self._next_seal = 0.0
        self._unsealed: tuple[int, list[tuple]] | None = None
        self._last_heartbeat = 0.0
        self._stopped_ms: int | None = None
        self._stats_ms = self.stats.started_ms  # when the kernel's drop count was last read
        self._stop = False

    def _heartbeat(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO flowlog_heartbeat (id, run_id, pid, started_ms, complete_ms, last_event_ms, "
                     "stopped_ms, tick_ms) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                     (self.run_id, os.getpid(), self.stats.started_ms, self.complete_ms, self.last_event_ms,
                      self._stopped_ms, int(self.heartbeat_seconds * 1000)))

    def _rows6(self) -> list[tuple]:
        """Pending IPv6 rows with the MAC the neighbour table gives their source (None if unknown)."""
        from ledger.flows6 import Neighbours
        if self._neighbours is None:
            self._neighbours = Neighbours()
        out = []
        for r in self.pending6:
            mac = self._neighbours.lookup(r[5])
            self.stats.mac_unknown6 += mac is None
            out.append((*r, mac))
        return out

    def flush(self, force_seal: bool = False) -> None:
        """Write pending events with the heartbeat (sealed when due); on failure keep them in memory."""
        now = time.monotonic()
        if (not self.pending and not self.pending6 and not force_seal
                and now - self._last_heartbeat < self.heartbeat_seconds
                and not (self._unsealed and now >= self._next_seal)):
            return
        seal_now = force_seal or now >= self._next_seal
        rows6 = self._rows6() if self.pending6 else []

        def also(conn: sqlite3.Connection) -> None:
            if rows6:
                from ledger.flows6 import insert_rows6
                insert_rows6(conn, rows6)
            self._heartbeat(conn)

        try:
            done = stage_rows(self.ledger, self.pending, self.key if seal_now else None, also=also,
                              unsealed=self._unsealed)
        except LedgerError as exc:
            self.stats.write_errors += 1
            print(f"skillspot flowlog: {exc}; keeping {len(self.pending)} events in memory and retrying",
                  file=sys.stderr)
            return
        self._last_heartbeat = now
        if seal_now:
            self._next_seal = now + self.seal_seconds
            self.stats.seals += done.sealed is not None
            self._unsealed = None
        elif self.pending:
            # Kept until the next sealing flush hashes them (from memory, not read back).
            if self._unsealed and self._unsealed[0] + len(self._unsealed[1]) == done.first_id:
                self._unsealed[1].extend(self.pending)
            else:
                self._unsealed = (done.first_id, list(self.pending)) if not self._unsealed else None
        self.stats.stored += len(self.pending)
        self.stats.stored6 += len(rows6)
        self.pending = []
        self.pending6 = []

    def recover(self, listening_ms: int) -> None:
        """At start, once subscribed: record the outage since the last run and the flows open now.

        `listening_ms` is when the subscription was in place (events from then on are queued).
        """
        conn = self.ledger.db.conn
        prev = conn.execute("SELECT run_id, complete_ms, last_event_ms, stopped_ms FROM flowlog_heartbeat "
                            "WHERE id = 1").fetchone()
        try:
            dumped, counts = dump_conntrack(listening_ms, self.nat_only)
            dump_error = None
        except (DumpError, OSError, MalformedMessage) as exc:
            dumped, counts, dump_error = [], {}, str(exc)
            print(f"skillspot flowlog: could not read the conntrack table: {exc}; flows open now become visible "
                  "only when they end", file=sys.stderr)
        dumped6: list[tuple] = []
        if self.ipv6 and dump_error is None:
            try:
                dumped6, counts6 = dump_conntrack(listening_ms, self.nat_only, socket.AF_INET6)
                counts = {**counts, "ipv6": counts6}
            except (DumpError, OSError, MalformedMessage) as exc:
                print(f"skillspot flowlog: could not read the IPv6 conntrack table: {exc}", file=sys.stderr)
        key = lambda r: (r[0], r[4], r[5], r[6], r[8])  # ct_id, proto, src_ip, src_port, pub_port
        # Open rows whose DESTROY never came: after an outage, either still open (in the dump) or ended unseen.
        still_open = conn.execute(
            """SELECT ct_id, open, start_ms, end_ms, proto, src_ip, src_port, pub_ip, pub_port, dst_ip, dst_port,
                      bytes_orig, bytes_reply, flags FROM flow_staging o WHERE open = 1 AND NOT EXISTS (
                 SELECT 1 FROM flow_staging d INDEXED BY flow_staging_ct WHERE d.open = 0 AND d.ct_id = o.ct_id AND d.pub_port = o.pub_port
                 AND d.src_port = o.src_port AND d.id > o.id)""").fetchall()
        known = {key(r) for r in still_open}
        in_table = {key(r) for r in dumped}
        rows = []
        for r in dumped:
            if key(r) in known:
                continue
            flags = FLAG_FROM_DUMP | (FLAG_START_UNKNOWN if r[2] == listening_ms else 0)
            rows.append((*r[:-1], r[-1] | flags))
        self.stats.dumped = len(rows)
        if dump_error is None:
            for r in still_open:
                if key(r) not in in_table:
                    rows.append((r[0], 0, r[2], max(listening_ms, r[2]), *r[4:11], 0, 0, r[13] | FLAG_END_UNKNOWN))
                    self.stats.closed_unseen += 1
        still_open6 = conn.execute(
            """SELECT ct_id, open, start_ms, end_ms, proto, src_ip, src_port, pub_ip, pub_port, dst_ip, dst_port,
                      bytes_orig, bytes_reply, flags, mac FROM flows6 o
               WHERE open = 1 AND NOT EXISTS (SELECT 1 FROM flows6 d WHERE d.open = 0 AND d.ct_id = o.ct_id
               AND d.pub_port = o.pub_port AND d.src_port = o.src_port AND d.id > o.id)""").fetchall()
        open6 = {key(r) for r in still_open6}
        self.pending6 = [(*r[:-1], r[-1] | FLAG_FROM_DUMP) for r in dumped6 if key(r) not in open6]
        self.stats.dumped += len(self.pending6)
        in_table6 = {key(r) for r in dumped6}
        in_table |= in_table6
        rows6 = self._rows6() if self.pending6 else []
        self.pending6 = []
        if self.ipv6 and dump_error is None:
            # As for IPv4: seen open before the outage, gone now: ended unseen.
            for r in still_open6:
                if key(r) not in in_table6:
                    rows6.append((r[0], 0, r[2], max(listening_ms, r[2]), *r[4:11], 0, 0, r[13] | FLAG_END_UNKNOWN,
                                  r[14]))
                    self.stats.closed_unseen += 1
        self.dumped_keys = in_table
        gap = None
        if prev is not None and listening_ms > prev[1]:
            gap = (prev[1], listening_ms, "logger stopped" if prev[3] is not None else "logger killed or crashed",
                   {"previous_run": prev[0], "last_event_ms": prev[2], "stopped_ms": prev[3],
                    "recorded_open_from_table": self.stats.dumped,
                    "closed_end_unknown": self.stats.closed_unseen, "dump": counts, "dump_error": dump_error})
            self.stats.gap_ms = listening_ms - prev[1]

        def also(c: sqlite3.Connection) -> None:
            if rows6:
                from ledger.flows6 import insert_rows6
                insert_rows6(c, rows6)
            if gap is not None:
                record_gap(c, self.ledger.now_ms(), self.ledger.box_id, gap[0], gap[1], gap[2], **gap[3])
            self._heartbeat(c)

        # The heartbeat moves to listening_ms: the dump has recorded every flow open at that time.
        self.complete_ms = listening_ms
        stage_rows(self.ledger, rows, self.key, also=also)
        self._last_heartbeat = time.monotonic()
        self._next_seal = time.monotonic() + self.seal_seconds
        self.stats.seals += 1

    def write_stats(self, sub: ConntrackSubscription | None = None) -> None:
        """Refresh the kernel's drop count and write the counters as JSON (atomically)."""
        now_ms = self.ledger.now_ms()
        if sub is not None:
            drops = sub.kernel_drops()
            if drops is not None and drops > self.stats.kernel_drops:
                print(f"skillspot flowlog: the kernel could not queue {drops - self.stats.kernel_drops} more "
                      "events (buffer full); DESTROY events are redelivered, NEW events are lost",
                      file=sys.stderr)
                self._record_overflow(self._stats_ms, now_ms, drops - self.stats.kernel_drops)
                self.stats.kernel_drops = drops
        self._stats_ms = now_ms
        if self.stats_file:
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self.stats)))
            tmp.replace(self.stats_file)

    def _record_overflow(self, from_ms: int, to_ms: int, dropped: int) -> None:
        """A full socket buffer lost NEW events: a (partial) gap, so answers then say they may be incomplete.

        Finished flows are complete (their DESTROY is redelivered); a flow whose NEW was lost is
        invisible while it stays open.
        """
        conn = self.ledger.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            record_gap(conn, to_ms, self.ledger.box_id, from_ms, to_ms, "netlink buffer overflow",
                       messages_not_queued=dropped, run_id=self.run_id,
                       effect="NEW events lost: flows that started then are invisible until they end")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            print(f"skillspot flowlog: could not record the overflow as a gap: {exc}", file=sys.stderr)

    def housekeeping(self) -> None:
        """Clock sample, compaction, seal, disk check (each failure reported, none fatal)."""
        # Seal what this process staged first, from memory; compaction would read it back.
        self.flush(force_seal=True)
        for step in (lambda: record_clock(self.ledger, read_chrony()), lambda: compact(self.ledger, key=self.key),
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
                kind, row = parse_message(datagram, start, end, now_ms, self.nat_only, self.ipv6)
                if kind == KIND_NEW:
                    st.new += 1
                    if row is not None and self.dumped_keys and (row[0], *row[4:7], row[8]) in self.dumped_keys:
                        st.dump_duplicates += 1  # queued before the dump, which recorded the flow already
                        continue
                elif kind == KIND_DESTROY:
                    st.destroy += 1
                else:
                    st.skipped_other += 1
                    continue
                if row is None:
                    st.skipped_not_nat += 1
                elif type(row[5]) is bytes:
                    self.pending6.append(row)  # IPv6: its own table, with the device's MAC
                    self.last_event_ms = now_ms
                else:
                    self.pending.append(row)
                    self.last_event_ms = now_ms
        except MalformedMessage as exc:
            st.malformed += 1
            if st.malformed <= 10:
                print(f"skillspot flowlog: skipped a malformed netlink message: {exc}", file=sys.stderr)

    def drain(self, sub: ConntrackSubscription, until: float) -> bool:
        """Receive and queue everything already waiting (bounded by the monotonic time `until`).

        Returns True if the socket was found empty; then every event queued before the start
        of that last receive is in `pending` (the heartbeat's `complete_ms` moves there).
        """
        while True:
            before = self.ledger.now_ms()
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
                if len(self.pending) + len(self.pending6) >= self.batch:
                    self.flush()
            if len(datagrams) < self.batch:
                self.complete_ms = before
                return True
            if time.monotonic() >= until:
                return False

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
        try:
            self.recover(self.ledger.now_ms())
        except LedgerError:
            sub.close()
            raise
        log_event(self.ledger, "flowlog_start", None, rcvbuf=sub.rcvbuf, reliable=sub.reliable,
                  sysctl_failures=failed, run_id=self.run_id, dumped=self.stats.dumped,
                  closed_unseen=self.stats.closed_unseen, gap_ms=self.stats.gap_ms)
        if self.ready_file:
            self.ready_file.write_text("ready")
        # Under systemd (Type=notify) units ordered after this one, the gate first, start only now:
        # nobody is let in before flows are recorded.
        from base.sdnotify import notify
        try:
            notify("READY=1\nSTATUS=recording NAT flows")
        except OSError as exc:
            sub.close()
            raise LedgerError(f"cannot tell systemd the flow logger is ready ($NOTIFY_SOCKET): {exc}") from exc
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
                    if self.drain(sub, next_flush) and self.dumped_keys is not None:
                        self.dumped_keys = None  # every NEW queued before the dump has been seen
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
            # The last mark of this run: stopped, and complete through the final drain.
            self._stopped_ms = self.ledger.now_ms()
            self.flush(force_seal=True)
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
