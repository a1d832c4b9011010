"""Bench: bytes per NAT flow on disk and `who` latency on a generated 90-day ledger.

Generates N flows (default 50 million) spread over 90 days of a busy office box (opening
hours heavier), stored exactly as the flow logger stores them (compressed segments through
ledger.segments.encode_columns, long flows as rows), plus a login and lease per visitor
per day. Then measures:
  * bytes per flow (flow tables only, from SQLite's dbstat; and the whole file);
  * `who` latency (ledger.query.who: flow lookup + person/session) for random known flows,
    p50 and p99, against a baseline: the same lookup on an uncompressed, indexed rowid
    table of the same flows for one day (the plain way).
Usage: python bench/ledger_store.py [--flows 50000000] [--dir /work/bench-tmp] [--keep]
Runs on 2 cores: segments are built in a process pool, written by the main process.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
from array import array
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.db import open_ledger  # noqa: E402
from ledger.flows import LONG_FLOW_MS, SEGMENT_SPAN_MS, ip_int  # noqa: E402
from ledger.query import who  # noqa: E402
from ledger.segments import CODEC_ZLIB_V1, COLUMNS, encode_columns  # noqa: E402

DAY_MS = 86_400_000
T0 = 1_780_000_000_000 - (1_780_000_000_000 % DAY_MS)  # a UTC midnight
DAYS = 90
PUB = ip_int("203.0.113.1")
LAN0 = ip_int("10.99.0.50")
CLIENTS = 200
LONG_SHARE = 0.01
# Share of each day's flows per UTC hour: a Thai office (UTC+7) open 08:00-17:00 local.
HOURS = [0.2 if not 1 <= h <= 10 else 6.0 for h in range(24)]


def gen_window(args: tuple[int, int, int, int]) -> tuple[list[tuple], list[tuple], int]:
    """Flows ending in one SEGMENT_SPAN window: (segment rows, long-flow rows, n)."""
    seed, t_lo, n, max_seg = args
    rnd = random.Random(seed)
    dests = [ip_int("198.18.0.0") + rnd.randrange(1 << 17) for _ in range(5000)]
    ends = sorted(t_lo + rnd.randrange(SEGMENT_SPAN_MS) for _ in range(n))
    segs, longs = [], []
    for k in range(0, n, max_seg):
        chunk_ends = ends[k:k + max_seg]
        recs = []
        for end in chunk_ends:
            r = rnd.random()
            dur = int(rnd.expovariate(1 / 20_000)) if r < 0.97 else rnd.randrange(60_000, LONG_FLOW_MS)
            proto = 6 if r < 0.8 else 17
            sport = rnd.randrange(32768, 61000)
            pport = sport if rnd.random() < 0.95 else rnd.randrange(1024, 65536)
            dport = 443 if r < 0.75 else 80 if r < 0.8 else 53 if r < 0.95 else rnd.randrange(1, 65536)
            dst = dests[int(5000 * rnd.random() ** 3)]
            recs.append((pport, pport ^ sport, end - min(dur, end - t_lo + SEGMENT_SPAN_MS), proto, 0,
                         LAN0 + rnd.randrange(CLIENTS), PUB, dst, dport, int(2 ** (rnd.random() * 20)),
                         int(2 ** (rnd.random() * 26)), end))
        recs.sort(key=lambda x: (x[0], x[2]))
        base = min(x[2] for x in recs)
        cols = {name: array(code) for name, code in COLUMNS}
        for pport, xor, start, proto, flags, src, pub, dst, dport, bo, br, end in recs:
            cols["pub_port"].append(pport)
            cols["port_xor"].append(xor)
            cols["start_off"].append(start - base)
            cols["duration"].append(end - start)
            cols["proto"].append(proto)
            cols["flags"].append(flags)
            cols["src_ip"].append(src)
            cols["pub_ip"].append(pub)
            cols["dst_ip"].append(dst)
            cols["dst_port"].append(dport)
            cols["bytes_orig"].append(bo)
            cols["bytes_reply"].append(br)
        segs.append((t_lo + SEGMENT_SPAN_MS, CODEC_ZLIB_V1, len(recs), base, chunk_ends[0], chunk_ends[-1],
                     encode_columns(cols, base)))
    n_long = int(n * LONG_SHARE)
    for _ in range(n_long):
        end = t_lo + rnd.randrange(SEGMENT_SPAN_MS)
        start = end - rnd.randrange(LONG_FLOW_MS + 1, 4 * 3_600_000)
        sport = rnd.randrange(32768, 61000)
        longs.append((end, start, end, 6, LAN0 + rnd.randrange(CLIENTS), sport, PUB, sport, dests[rnd.randrange(50)],
                      443, int(2 ** (rnd.random() * 24)), int(2 ** (rnd.random() * 30)), 0))
    return segs, longs, n + n_long


def plan(total: int, max_seg: int) -> list[tuple[int, int, int, int]]:
    """Split `total` flows over DAYS days of 10-minute windows by the hourly profile."""
    per_day = total / DAYS
    weight = sum(HOURS)
    jobs = []
    windows_per_hour = 3_600_000 // SEGMENT_SPAN_MS
    for d in range(DAYS):
        for h in range(24):
            n_hour = per_day * HOURS[h] / weight / (1 + LONG_SHARE)
            for w in range(windows_per_hour):
                t = T0 + d * DAY_MS + h * 3_600_000 + w * SEGMENT_SPAN_MS
                jobs.append((len(jobs), t, max(1, round(n_hour / windows_per_hour)), max_seg))
    return jobs


def generate(path: Path, total: int) -> tuple[int, float]:
    led = open_ledger(path, "bench-box")
    conn = led.db.conn
    conn.execute("PRAGMA synchronous = OFF")
    # One login and lease per visitor per day, 08:00-17:00 Thai time (01:00-10:00 UTC).
    logins, leases = [], []
    for d in range(DAYS):
        for c in range(CLIENTS):
            ip = str(__import__("ipaddress").IPv4Address(LAN0 + c))
            mac = f"02:00:00:{d % 256:02x}:{c // 256:02x}:{c % 256:02x}"
            at = T0 + d * DAY_MS + 3_600_000 - 60_000
            leases.append((at, "bench-box", "add", mac, ip, None, at + 10 * 3_600_000))
            logins.append((at + 1000, "bench-box", "line", f"U{d:04d}{c:028x}", f"visitor {d}-{c}", None, None,
                           "2026-11", mac, ip, at + 10 * 3_600_000))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO leases (at_ms, box_id, event, mac, ip, hostname, expires_ms) VALUES (?,?,?,?,?,?,?)", leases)
    conn.executemany("INSERT INTO logins (at_ms, box_id, method, line_user_id, display_name, friend, friendship_changed,"
                     " consent_version, mac, ip, expires_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)", logins)
    conn.execute("COMMIT")
    t = time.perf_counter()
    written = 0
    jobs = plan(total, 16384)
    with ProcessPoolExecutor(max_workers=2) as pool:
        conn.execute("BEGIN")
        for i, (segs, longs, n) in enumerate(pool.map(gen_window, jobs, chunksize=16)):
            conn.executemany("INSERT INTO flow_segments (at_ms, codec, n_flows, min_start_ms, min_end_ms, max_end_ms, data)"
                             " VALUES (?,?,?,?,?,?,?)", segs)
            conn.executemany("INSERT INTO flows_long (at_ms, start_ms, end_ms, proto, src_ip, src_port, pub_ip, pub_port,"
                             " dst_ip, dst_port, bytes_orig, bytes_reply, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", longs)
            written += n
            if i % 2000 == 1999:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
                print(f"  {written:,} flows, {time.perf_counter() - t:.0f} s", flush=True)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    led.close()
    return written, elapsed


def sample_targets(conn: sqlite3.Connection, k: int, rnd: random.Random):
    """k known flows (public port, a time inside the flow) picked at random from the ledger."""
    from ledger.segments import Segment
    top = conn.execute("SELECT MAX(id) FROM flow_segments").fetchone()[0]
    out = []
    while len(out) < k:
        blob = conn.execute("SELECT data FROM flow_segments WHERE id = ?", [rnd.randrange(1, top + 1)]).fetchone()
        if blob is None:
            continue
        seg = Segment(blob[0])
        f = seg.flow(rnd.randrange(seg.n))
        out.append((f, (f.start_ms + f.end_ms) // 2))
    return out


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=50_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/work/bench-tmp/ledger"))
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--keep", action="store_true", help="keep the generated ledger")
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    path = a.dir / "bench-ledger.sqlite"
    for p in a.dir.glob("bench-ledger.sqlite*"):
        p.unlink()
    print(f"generating {a.flows:,} flows over {DAYS} days into {path}")
    written, gen_s = generate(path, a.flows)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tables = ("flow_segments", "flows_long", "flow_segments_min_end", "flows_long_pub", "flows_long_src")
    flow_bytes = conn.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({','.join('?' * len(tables))})", tables).fetchone()[0]
    file_bytes = path.stat().st_size
    n_long = conn.execute("SELECT COUNT(*) FROM flows_long").fetchone()[0]
    n_segs = conn.execute("SELECT COUNT(*), SUM(n_flows) FROM flow_segments").fetchone()
    print(f"generated {written:,} flows ({n_segs[1]:,} in {n_segs[0]:,} segments, {n_long:,} long) in {gen_s:.0f} s")
    print(f"bytes per flow: {flow_bytes / written:.2f} (flow tables and their indexes), "
          f"{file_bytes / written:.2f} (whole file, {file_bytes / 1e9:.2f} GB, with logins/leases)")

    # Baseline: one day of the same flows in a plain indexed rowid table (the uncompressed way).
    rnd = random.Random(7)
    led = open_ledger(path, "bench-box")
    targets = sample_targets(led.db.conn, a.queries, rnd)
    plain = a.dir / "plain-day.sqlite"
    if plain.exists():
        plain.unlink()
    pc = sqlite3.connect(plain)
    pc.execute("CREATE TABLE flows (id INTEGER PRIMARY KEY, start_ms INT, end_ms INT, proto INT, src_ip INT, src_port INT,"
               " pub_ip INT, pub_port INT, dst_ip INT, dst_port INT, bytes_orig INT, bytes_reply INT, flags INT)")
    from ledger.segments import Segment
    day_lo = T0 + 45 * DAY_MS
    n_plain = 0
    pc.execute("BEGIN")
    for (blob,) in led.db.conn.execute("SELECT data FROM flow_segments WHERE min_end_ms BETWEEN ? AND ?",
                                       [day_lo, day_lo + DAY_MS]):
        rows = [tuple(f.__dict__.values()) for f in Segment(blob).flows()]
        pc.executemany("INSERT INTO flows (start_ms, end_ms, proto, src_ip, src_port, pub_ip, pub_port, dst_ip, dst_port,"
                       " bytes_orig, bytes_reply, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        n_plain += len(rows)
    pc.execute("CREATE INDEX flows_pub ON flows (pub_port, start_ms)")
    pc.execute("COMMIT")
    pc.execute("VACUUM")
    plain_bpf = plain.stat().st_size / max(n_plain, 1)
    print(f"baseline: plain indexed rowid table, one day = {n_plain:,} flows: {plain_bpf:.2f} bytes per flow")

    lat, found = [], 0
    for f, at in targets:
        t = time.perf_counter()
        ans = who(led, "203.0.113.1", f.pub_port, at, slack_ms=0)
        lat.append((time.perf_counter() - t) * 1000)
        found += any(x["flow"]["src_port"] == f.src_port and x["flow"]["start_ms"] == f.start_ms for x in ans)
    miss = []
    for _ in range(200):
        t = time.perf_counter()
        who(led, "203.0.113.1", rnd.randrange(1, 1024), T0 + rnd.randrange(DAYS * DAY_MS), slack_ms=0)
        miss.append((time.perf_counter() - t) * 1000)
    plain_lat = []
    for f, at in targets[:500]:
        t = time.perf_counter()
        pc.execute("SELECT * FROM flows WHERE pub_port = ? AND start_ms <= ? AND end_ms >= ? AND pub_ip = ?",
                   [f.pub_port, at, at, PUB]).fetchall()
        plain_lat.append((time.perf_counter() - t) * 1000)
    print(f"who (flow + person + session), {len(lat)} random known flows over {DAYS} days: "
          f"p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, max {max(lat):.2f} ms; found {found}/{len(lat)}")
    print(f"who for ports nobody used: p50 {pct(miss, 50):.2f} ms, p99 {pct(miss, 99):.2f} ms")
    print(f"baseline flow lookup alone on the plain one-day table: p50 {pct(plain_lat, 50):.3f} ms, "
          f"p99 {pct(plain_lat, 99):.3f} ms (ratio of p99: {pct(lat, 99) / max(pct(plain_lat, 99), 1e-6):.1f}x)")
    print(f"size ratio compressed/plain: {flow_bytes / written / plain_bpf:.2f}")
    led.close()
    pc.close()
    if not a.keep:
        shutil.rmtree(a.dir)
        print(f"removed {a.dir}")


if __name__ == "__main__":
    main()
