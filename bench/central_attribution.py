"""Bench: attribution latency and bytes per flow row in the centre's store (chDB).

Generates N flow rows INSIDE ClickHouse (INSERT ... SELECT FROM numbers(), in chunks) into the
production DDL (central/store.py), shaped like a national deployment: `--boxes` boxes, each
with its own public address, 200,000 flows a box a day spread over the days, ports across the
masquerade range, short flows with a few long ones. Then measures:
  * bytes per flow row (compressed, from system.parts, after merging);
  * the attribution probe (the flows query of Store.attribute) for random existing flows,
    p50 / p99 over --probes probes, and the full Store.attribute (flow + session + clock);
  * baseline in the same run: a trivial query (SELECT 1) through the same session, so the
    ratio shows what the probe costs beyond a round trip into chDB.
Usage: python bench/central_attribution.py [--rows 200000000] [--dir /work/bench-tmp/attr] [--keep] [--reuse]
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.store import open_store  # noqa: E402

DAY_MS = 86_400_000
T0 = 1_790_000_000_000 - (1_790_000_000_000 % DAY_MS)
FLOWS_PER_BOX_DAY = 200_000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000_000)
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=20_000_000)
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--dir", default="/work/bench-tmp/central-attr")
    ap.add_argument("--keep", action="store_true", help="keep the generated store (for --reuse)")
    ap.add_argument("--reuse", action="store_true",
                    help="probe a store kept by an earlier --keep run of the same --rows (generation needs no quiet "
                         "machine, the probes do)")
    a = ap.parse_args()
    d = Path(a.dir)
    if d.exists() and not a.reuse:
        shutil.rmtree(d)
    store = open_store("", d / "chdb", database="bench")
    days = max(1, a.rows // (a.boxes * FLOWS_PER_BOX_DAY))
    span = days * DAY_MS
    per_box = a.rows // a.boxes
    t0 = time.monotonic()
    done = 0
    if a.reuse:
        done = int(store.q("SELECT count() AS n FROM bench.flows")[0]["n"])
        if done != a.rows:
            raise SystemExit(f"{d} holds {done:,} flows, not --rows {a.rows:,}: run once with --keep first")
        print(f"reusing {done:,} flows in {d}", flush=True)
    else:
        print(f"generating {a.rows:,} flows: {a.boxes} boxes x {days} day(s) in chunks of {a.chunk:,}", flush=True)
    while done < a.rows:
        n = min(a.chunk, a.rows - done)
        # Row r of box b = r % boxes, k = r // boxes: flows of a box are evenly spread over the span
        # with jitter; ~2% of flows last 10-60 min, the rest up to 2 min.
        store.backend.command(f"""
INSERT INTO bench.flows (pub_ip, pub_port, start_ms, duration_ms, proto, flags, src_ip, src_port, dst_ip, dst_port,
                          bytes_orig, bytes_reply, box_id, row_key, seq)
SELECT 3405803776 + (number % {a.boxes}) AS pub_ip,
       toUInt16(1024 + cityHash64(number, 1) % 64511) AS pub_port,
       {T0} + intDiv(intDiv(number, {a.boxes}) * {span}, {per_box}) + cityHash64(number, 2) % 1000 AS start_ms,
       toUInt32(if(cityHash64(number, 3) % 50 = 0, 600000 + cityHash64(number, 4) % 3000000,
                   cityHash64(number, 4) % 120000)) AS duration_ms,
       if(cityHash64(number, 5) % 5 = 0, 17, 6) AS proto, 0 AS flags,
       167772160 + (number % {a.boxes}) * 65536 + cityHash64(number, 6) % 200 AS src_ip,
       toUInt16(32768 + cityHash64(number, 7) % 28232) AS src_port,
       toUInt32(1560281088 + cityHash64(number, 8) % 20000) AS dst_ip,  -- a pool of 20,000 servers (real traffic goes to few)
       if(cityHash64(number, 9) % 3 = 0, 80, 443) AS dst_port,
       cityHash64(number, 10) % 20000 AS bytes_orig, cityHash64(number, 11) % 2000000 AS bytes_reply,
       concat('box-', toString(number % {a.boxes})) AS box_id,
       intDiv(number, {a.boxes}) AS row_key, toUInt32(intDiv(number, {a.boxes} * 50000)) AS seq
FROM numbers({done}, {n})""")
        done += n
        print(f"  {done:,} rows, {time.monotonic() - t0:.0f} s", flush=True)
    gen_s = time.monotonic() - t0
    t1 = time.monotonic()
    if not a.reuse:
        store.backend.command("OPTIMIZE TABLE bench.flows FINAL")
    merge_s = time.monotonic() - t1
    st = store.q("SELECT sum(rows) AS rows, sum(data_compressed_bytes) AS c, sum(data_uncompressed_bytes) AS u, count() AS parts "
                 "FROM system.parts WHERE database = 'bench' AND table = 'flows' AND active")[0]
    cols = store.q("SELECT name, data_compressed_bytes AS c FROM system.columns WHERE database = 'bench' AND table = 'flows' "
                   "ORDER BY c DESC")
    print(f"generated in {gen_s:.0f} s, merged in {merge_s:.0f} s; {st['rows']:,} rows in {st['parts']} parts; "
          f"{st['c'] / st['rows']:.2f} bytes/row compressed ({st['u'] / st['rows']:.1f} uncompressed)")
    print("  per column bytes/row: " + ", ".join(f"{c['name']} {c['c'] / st['rows']:.2f}" for c in cols))
    rng = random.Random(7)
    sample = store.q(f"SELECT pub_ip, pub_port, start_ms, duration_ms FROM bench.flows "
                     f"WHERE cityHash64(row_key, box_id) % {max(1, a.rows // (a.probes * 4))} = 0 LIMIT {a.probes}")
    rng.shuffle(sample)
    import ipaddress
    probe_sql = ("SELECT box_id, row_key, seq, start_ms, start_ms + duration_ms AS end_ms, proto, flags, src_ip, src_port, "
                 "pub_ip, pub_port, dst_ip, dst_port, bytes_orig, bytes_reply FROM {db}.flows "
                 "WHERE pub_ip = {ip:UInt32} AND pub_port = {port:UInt16} AND start_ms <= {hi:Int64} "
                 "AND start_ms >= {lo_start:Int64} AND start_ms + duration_ms >= {lo:Int64} ORDER BY start_ms, box_id, row_key")
    base, probe, full, hits = [], [], [], 0
    for s in sample[: a.probes]:
        at = s["start_ms"] + s["duration_ms"] // 2
        t = time.perf_counter()
        store.q("SELECT 1 AS x")
        base.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        rows = store.q(probe_sql, {"ip": s["pub_ip"], "port": s["pub_port"], "hi": at + 1000, "lo": at - 1000,
                                   "lo_start": at - 1000 - 7 * DAY_MS})
        probe.append((time.perf_counter() - t) * 1000)
        hits += bool(rows)
    for s in sample[: min(200, a.probes)]:
        at = s["start_ms"] + s["duration_ms"] // 2
        t = time.perf_counter()
        store.attribute(str(ipaddress.IPv4Address(s["pub_ip"])), s["pub_port"], at, 1000)
        full.append((time.perf_counter() - t) * 1000)
    print(f"probes: {len(probe)} ({hits} found their flow)")
    print(f"baseline SELECT 1:        p50 {pct(base, 50):.2f} ms  p99 {pct(base, 99):.2f} ms")
    print(f"attribution probe:        p50 {pct(probe, 50):.2f} ms  p99 {pct(probe, 99):.2f} ms  "
          f"(ratio p99 to baseline p99: {pct(probe, 99) / pct(base, 99):.1f}x)")
    print(f"Store.attribute (full):   p50 {pct(full, 50):.2f} ms  p99 {pct(full, 99):.2f} ms (flow + session + clock + "
          "receive time; no logins in this data set)")
    store.close()
    if not a.keep:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
