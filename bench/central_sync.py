"""Bench: box-to-centre sync throughput and the catch-up of a busy box's 7-day backlog.

Builds a box ledger holding `--days` days of a busy office (200,000 NAT flows a day, stored as
the flow logger stores them: compressed segments and long-flow rows; plus 2,000 logins, leases
and logouts a day), starts a real centre (`central serve`, gunicorn, chDB) on a loopback port,
enrols the box and times `skillspot sync` (SyncService) until everything is acknowledged.
Reports rows/s, the catch-up time, where the time went, and bytes per stored flow row at the
centre (after the centre is stopped: chDB allows one process per folder).
Baseline in the same run: the same batches ingested straight into a chDB store in this process
(no HTTP, signing, validation or box-side batch forming) — the ratio is the cost of the link.
Usage: python bench/central_sync.py [--days 7] [--flows-per-day 200000] [--dir /work/bench-tmp/sync]
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import sync as lsync  # noqa: E402
from ledger.db import open_ledger  # noqa: E402
from ledger.flows import write_flows  # noqa: E402
from ledger.records import LeaseEvent, Login, record_lease, record_login, record_logout  # noqa: E402
from ledger.segments import Flow  # noqa: E402
from syncapi import batch as sbatch  # noqa: E402

DAY_MS = 86_400_000


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def build_ledger(path: Path, box_id: str, days: int, flows_per_day: int, clock: Clock):
    led = open_ledger(path, box_id, clock=clock)
    rng = random.Random(1)
    conn = led.db.conn
    pub = (203 << 24) | (0 << 16) | (113 << 8) | 9
    t_start = int(clock.t * 1000)
    for day in range(days):
        day0 = t_start + day * DAY_MS
        clock.t = day0 / 1000
        for u in range(2000):
            mac = f"02:00:00:{day:02x}:{u // 256:02x}:{u % 256:02x}"
            ip = f"10.99.{u // 250}.{u % 250 + 2}"
            record_lease(led, LeaseEvent("add", mac, ip, None, led.now_ms() + 3600_000))
            lid = record_login(led, Login("line", f"U{day:04x}{u:028x}", f"visitor {u}", None, None, "v1", mac, ip,
                                          led.now_ms() + 3600_000))
            record_logout(led, mac, "expired", lid)
            clock.t += 8 * 3600 / 2000
        flows = []
        for i in range(flows_per_day):
            start = day0 + int(i * DAY_MS / flows_per_day)
            dur = rng.randrange(600_000, 3_600_000) if i % 50 == 0 else rng.randrange(0, 120_000)
            port = rng.randrange(32768, 61000)
            src = (10 << 24) | (99 << 16) | rng.randrange(0, 2000)
            flows.append(Flow(start, start + dur, 6 if i % 5 else 17, src, port, pub, port,
                              (93 << 24) + rng.randrange(20000), 443 if i % 3 else 80, rng.randrange(20000),
                              rng.randrange(2_000_000), 0))
        conn.execute("BEGIN IMMEDIATE")
        write_flows(conn, day0 + DAY_MS, flows)
        conn.execute("COMMIT")
        print(f"  day {day + 1}: ledger has {conn.execute('SELECT SUM(n_flows) FROM flow_segments').fetchone()[0]:,} "
              "segment flows", flush=True)
    return led


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--flows-per-day", type=int, default=200_000)
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--dir", default="/work/bench-tmp/central-sync")
    a = ap.parse_args()
    d = Path(a.dir)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    from boxsync.service import SyncService, SyncSettings
    from tests.sync_util import Centre
    clock = Clock(1_790_000_000.0 - a.days * 86400)
    print(f"building a {a.days}-day ledger ({a.flows_per_day:,} flows a day)", flush=True)
    t = time.monotonic()
    led = build_ledger(d / "box" / "ledger.sqlite", "bench-box", a.days, a.flows_per_day, clock)
    print(f"built in {time.monotonic() - t:.0f} s; ledger file {led.path.stat().st_size / 1e6:.0f} MB", flush=True)
    clock.t = time.time()
    centre = Centre(d)
    centre.start()
    try:
        svc = SyncService(led, SyncSettings(url=centre.url, data_dir=d / "box", enrol_code=centre.enrol_code(),
                                            batch_rows=a.batch_rows, batch_seconds=1, heartbeat_seconds=3600),
                          clock=time.time)
        svc.ensure_enrolled()
        total_rows = lsync.unsent(led)["rows"]
        form_s = upload_s = 0.0
        wire = 0
        t0 = time.monotonic()
        while True:
            t = time.monotonic()
            b = lsync.form_batch(led, a.batch_rows)
            if b is None:
                break
            form_s += time.monotonic() - t
            t = time.monotonic()
            ack = svc.client.upload(b.seq, b.body, b.hash)
            upload_s += time.monotonic() - t
            lsync.record_ack(led, b.seq, ack["receipt"], ack["received_ms"])
            wire += len(b.body)
        catchup = time.monotonic() - t0
        st = lsync.status(led)
        assert st["unsent_rows"] == 0 and st["pending_batches"] == 0, st
        print(f"catch-up: {total_rows:,} rows in {st['formed_seq']} batches, {catchup:.1f} s = "
              f"{total_rows / catchup:,.0f} rows/s; box forming+rebuilding {form_s:.1f} s, upload (centre side) "
              f"{upload_s:.1f} s; {wire / 1e6:.1f} MB on the wire ({wire / total_rows:.1f} B/row gzip)", flush=True)
    finally:
        centre.stop()
    from central.store import open_store
    store = open_store("", centre.data / "chdb")
    store.backend.command("OPTIMIZE TABLE skillspot.flows FINAL")
    p = store.q("SELECT sum(rows) AS r, sum(data_compressed_bytes) AS c FROM system.parts WHERE database = 'skillspot' "
                "AND table = 'flows' AND active")[0]
    n, u = store.count_rows("flows")
    print(f"centre: {n:,} flow rows ({u:,} distinct), {p['c'] / p['r']:.2f} bytes per stored flow row", flush=True)
    store.close()
    # Baseline: the same batches straight into a fresh chDB store in this process.
    base = open_store("", d / "baseline-chdb")
    t0 = time.monotonic()
    for seq in range(1, st["formed_seq"] + 1):
        b = lsync.rebuild(led, seq)
        payload, h = sbatch.parse(b.body)
        base.ingest("bench-box", seq, h, payload, 0)
    base_s = time.monotonic() - t0
    print(f"baseline (rebuild + parse + direct chDB ingest, no HTTP/signing/validation): {base_s:.1f} s; "
          f"ratio sync / baseline = {catchup / base_s:.2f}", flush=True)
    base.close()
    led.close()
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
