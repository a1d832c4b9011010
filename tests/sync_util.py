"""Helpers for the sync tests: a box ledger with rows in every synced table, a centre under
gunicorn on loopback (random port, own data dir), and row-by-row reconciliation."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ledger.accounting import AcctRecord, record_accounting
from ledger.clock import ClockSample, record_clock
from ledger.db import Ledger
from ledger.flows import FlowEvent, compact, stage
from ledger.records import LeaseEvent, Login, log_event, record_lease, record_login, record_logout
from ledger.seal import _columns
from ledger.sync import FLOW_SEGMENTS, sync_tables
from ledger.segments import Segment

PUB_IP = (203 << 24) | (0 << 16) | (113 << 8) | 7


class Clock:
    """A settable clock for a box (seconds)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fill(ledger: Ledger, clock: Clock, n_users: int = 3, flows_per_user: int = 40, tag: str = "") -> None:
    """Write leases, logins, logouts, clock samples, accounting, events and NAT flows."""
    record_clock(ledger, ClockSample(True, 120, 2, "ntp.example", "Normal"))
    events = []
    for u in range(n_users):
        ip = f"10.99.0.{50 + u}"
        mac = f"02:00:00:00:{u // 256:02x}:{u % 256:02x}"
        record_lease(ledger, LeaseEvent("add", mac, ip, f"phone{u}", ledger.now_ms() + 3600_000))
        lid = record_login(ledger, Login("line", f"U{tag}{u:031x}", f"ผู้ใช้ {tag}{u}", True, False, "v1", mac, ip,
                                         ledger.now_ms() + 3600_000))
        record_accounting(ledger, AcctRecord("127.0.0.1", "ap1", 1, f"{tag}{u:016x}", mac, mac.replace(":", ""), None,
                                             ip, 0, 0, 0, 0, 0, None, ledger.now_ms(), 0, f"{tag}k{u}-{ledger.now_ms()}"))
        src = (10 << 24) | (99 << 16) | (50 + u)
        for i in range(flows_per_user):
            start = ledger.now_ms() + i * 10
            port = 20000 + (u * flows_per_user + i) % 40000
            events.append(FlowEvent(None, 0, start, start + (700_000 if i == 0 else 2000), 6, src, port, PUB_IP, port,
                                    (93 << 24) + i, 443, 100 + i, 1000 + i))
        clock.t += 1
        if u % 2 == 0:
            record_logout(ledger, mac, "revoked", lid)
    log_event(ledger, "test", tag, n=n_users)
    stage(ledger, events)
    clock.t += 1200
    compact(ledger, force=True)


def box_keys(ledger: Ledger) -> dict[str, list]:
    """Every row the box holds in a synced table, as the keys the centre reports."""
    conn = ledger.db.conn
    out: dict[str, list] = {}
    for t in sync_tables(conn):
        if t == FLOW_SEGMENTS:
            keys = []
            for sid, blob in conn.execute("SELECT id, data FROM flow_segments ORDER BY id"):
                keys += [[sid, i] for i in range(Segment(blob).n)]
        else:
            keys = [r[0] for r in conn.execute(f'SELECT id FROM "{t}" ORDER BY id')]
        if keys:
            out[t] = keys
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Centre:
    """`central serve` under gunicorn on a loopback port of its own, with its own data dir."""

    def __init__(self, tmp: Path, threads: int = 4) -> None:
        self.dir = tmp
        self.data = tmp / "central-data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = tmp / "central.toml"
        self.conf.write_text(f'data_dir = "{self.data}"\n[server]\nbind = "127.0.0.1:{self.port}"\nthreads = {threads}\n'
                             '[admin]\nsecure_cookies = false\n')
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "central.log"

    def cmd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "central.cli", "--config", str(self.conf), *args],
                              capture_output=True, text=True, timeout=120)

    def start(self, deadline_s: float = 60) -> None:
        fh = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "central.cli", "--config", str(self.conf), "serve"],
                                     stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"central serve exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"central serve did not answer within {deadline_s} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def enrol_code(self, box_id: str | None = None) -> str:
        r = self.cmd("enrol-code", "--by", "test-admin", *(["--box", box_id] if box_id else []))
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def token(self) -> str:
        return (self.data / "internal-token").read_text().strip()

    def row_keys(self, box_id: str) -> dict[str, list]:
        r = requests.get(f"{self.url}/internal/rowkeys/{box_id}", headers={"X-Central-Internal": self.token()}, timeout=30)
        r.raise_for_status()
        return r.json()

    def appdb_rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        import sqlite3
        conn = sqlite3.connect(self.data / "central.sqlite", timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


def assert_exactly_once(centre: Centre, ledger: Ledger) -> int:
    """Every row of every synced box table is at the centre exactly once (row by row). Returns rows."""
    box = box_keys(ledger)
    got = centre.row_keys(ledger.box_id)
    n = 0
    for table in set(box) | set(got):
        want = sorted(box.get(table, []))
        have = sorted(got.get(table, []))
        dups = len(have) - len({json.dumps(k) for k in have})
        assert dups == 0, f"{table}: {dups} rows stored twice at the centre"
        assert have == want, (f"{table}: box has {len(want)} rows, centre {len(have)}; missing "
                              f"{[k for k in want if k not in have][:5]}, extra {[k for k in have if k not in want][:5]}")
        n += len(want)
    return n
