"""Flow ingest: conntrack NEW/DESTROY events captured per second by our flow logger
(`skillspot ledger flowlog`: raw netlink, ledger.ctevents -> SQLite ledger) against `conntrack -E -o timestamp`
writing to a file, both subscribed at once in the same box namespace, same run.

What it builds (all names start with skbench-, all deleted on any exit):
  phone ns (10.77.0.2) --veth-- box ns (10.77.0.1 | 203.0.113.1, masquerade) --veth-- inet ns (203.0.113.2)
In the box: nf_conntrack_acct=1, nf_conntrack_timestamp=1, UDP timeouts of 1 s, so every flow
gives one NEW and, about a second later, one DESTROY event.

Load: N short UDP flows (one datagram each, each with its own 5-tuple, so exactly one conntrack
entry per flow) sent as fast as one Python process can from the phone, bounded by --flows and
--seconds. Expected events = 2 x flows sent. Reported, for each subscriber: NEW and DESTROY
events captured, loss (expected - captured), ENOBUFS seen (conntrack -E: always loss), for ours
the kernel's drop counter (messages it could not queue; with reliable delivery the DESTROYs among
them are queued again later, so loss is what was never captured), events/s captured while the
load ran, and for our ledger the bytes per flow on disk after compaction.

    .venv/bin/python bench/flow_ingest.py [--flows 50000] [--seconds 60] [--rcvbuf-mib 64]

Needs root, iproute2, nft, conntrack (apt-get install conntrack). Not a test.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ledger.db import open_ledger  # noqa: E402
from ledger.flows import compact  # noqa: E402

MAX_FLOWS = 200_000
# Each flow gets its own (sport, dport) pair: sports 10000-59999, one server port per 50,000.
SPORTS = 50_000
PHONE, BOX_LAN, BOX_WAN, INET = "10.77.0.2", "10.77.0.1", "203.0.113.1", "203.0.113.2"

CLIENT = r'''
import json, socket, sys, time
n, seconds, sports = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
t0 = time.time(); sent = 0
for i in range(n):
    # Check the clock only every 1000 flows: the check itself would slow the loop.
    if i %% 1000 == 0 and time.monotonic() > deadline:
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("%s", 10000 + i %% sports))
    s.sendto(b"x", ("%s", 9000 + i // sports))
    s.close()
    sent += 1
print(json.dumps({"sent": sent, "t0": t0, "t1": time.time()}))
''' % (PHONE, INET)

# Counts datagrams so we know the packets really crossed the box; stops when idle or at the deadline.
SERVER = r'''
import json, selectors, socket, sys, time
ports, seconds, ready = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sel = selectors.DefaultSelector()
for p in range(ports):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    u.bind(("%s", 9000 + p)); u.setblocking(False); sel.register(u, selectors.EVENT_READ)
open(ready, "w").write("ready")
got, deadline, last = 0, time.monotonic() + seconds, None
while time.monotonic() < deadline:
    ev = sel.select(0.5)
    if not ev and last is not None and time.monotonic() - last > 3:
        break
    for key, _ in ev:
        for _ in range(256):
            try:
                key.fileobj.recv(64)
            except BlockingIOError:
                break
            got += 1; last = time.monotonic()
print(json.dumps({"received": got}))
''' % INET


class Bench:
    """Owns the namespaces and processes; cleanup() is safe to call more than once."""

    def __init__(self) -> None:
        tag = f"skbench-{os.getpid() % 100000}"
        self.ns = {"phone": f"{tag}-phone", "box": f"{tag}-box", "inet": f"{tag}-inet"}
        # veth names are limited to 15 characters, so they use a short form of the tag.
        short = f"skb{os.getpid() % 100000}"
        self.dev = {"phone": f"{short}p", "lan": f"{short}l", "wan": f"{short}w", "inet": f"{short}i"}
        self.procs: list[subprocess.Popen] = []
        self.created: list[str] = []

    def sh(self, *args: str, ns: str | None = None, input: str | None = None) -> str:
        cmd = (["ip", "netns", "exec", self.ns[ns]] if ns else []) + list(args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=input)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
        return done.stdout

    def spawn(self, ns: str, args: list[str], **kw) -> subprocess.Popen:
        # Own session, so cleanup can signal the process group and nothing outlives the bench.
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], *args], start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def build(self) -> None:
        for name in self.ns.values():
            self.sh("ip", "netns", "add", name)
            self.created.append(name)
        d = self.dev
        for a, b, na, nb in ((d["phone"], d["lan"], "phone", "box"), (d["wan"], d["inet"], "box", "inet")):
            self.sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            self.sh("ip", "link", "set", a, "netns", self.ns[na])
            self.sh("ip", "link", "set", b, "netns", self.ns[nb])
        for ns, dev, addr in (("phone", d["phone"], PHONE), ("box", d["lan"], BOX_LAN), ("box", d["wan"], BOX_WAN),
                              ("inet", d["inet"], INET)):
            self.sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            self.sh("ip", "link", "set", dev, "up", ns=ns)
            self.sh("ip", "link", "set", "lo", "up", ns=ns)
        self.sh("ip", "route", "add", "default", "via", BOX_LAN, ns="phone")
        self.sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns="box")
        rules = (f'table ip skbench_nat {{\n chain postrouting {{\n  type nat hook postrouting priority 100;\n'
                 f'  oifname "{d["wan"]}" meta l4proto {{ tcp, udp }} masquerade\n }}\n}}\n')
        self.sh("nft", "-c", "-f", "-", ns="box", input=rules)
        self.sh("nft", "-f", "-", ns="box", input=rules)
        # Per-namespace conntrack settings, only in the box: bytes and times in the events,
        # and 1 s UDP timeouts so each flow's DESTROY comes about a second after its NEW.
        for key in ("net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1",
                    "net.netfilter.nf_conntrack_udp_timeout=1", "net.netfilter.nf_conntrack_udp_timeout_stream=1"):
            self.sh("sysctl", "-qw", key, ns="box")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        for name in self.created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.created = []


def count_conntrack(path: Path) -> tuple[int, int]:
    """(NEW, DESTROY) lines in a `conntrack -E -o timestamp` output file."""
    new = destroy = 0
    with open(path, "rb") as fh:
        for line in fh:
            if b"[NEW]" in line:
                new += 1
            elif b"[DESTROY]" in line:
                destroy += 1
    return new, destroy


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def ledger_bytes(path: Path) -> tuple[int, int, int]:
    """(flows in segments + long rows, bytes of flow tables and indexes from dbstat, file bytes)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tables = ("flow_segments", "flows_long", "flow_segments_min_end", "flows_long_pub", "flows_long_src")
    flow_bytes = conn.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({','.join('?' * len(tables))})",
                              tables).fetchone()[0] or 0
    n = (conn.execute("SELECT COALESCE(SUM(n_flows), 0) FROM flow_segments").fetchone()[0]
         + conn.execute("SELECT COUNT(*) FROM flows_long").fetchone()[0])
    conn.close()
    return n, flow_bytes, path.stat().st_size


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (from /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=50_000, help=f"UDP flows to start (at most {MAX_FLOWS})")
    ap.add_argument("--seconds", type=float, default=60, help="stop sending after this long in any case")
    ap.add_argument("--rcvbuf-mib", type=int, default=64,
                    help="our logger's netlink buffer (ledger.netlink_rcvbuf_bytes); small values test redelivery")
    args = ap.parse_args()
    n = max(1, min(args.flows, MAX_FLOWS))
    seconds = max(1.0, min(args.seconds, 300.0))
    bench = Bench()
    # SIGTERM/SIGHUP become SystemExit so the finally block below always cleans up.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(f"stopped by signal"))
    with tempfile.TemporaryDirectory(prefix="skbench-flow-") as tmpname:
        tmp = Path(tmpname)
        try:
            run(bench, tmp, n, seconds, max(1, args.rcvbuf_mib))
        finally:
            bench.cleanup()


def run(bench: Bench, tmp: Path, n: int, seconds: float, rcvbuf_mib: int) -> None:
    bench.build()
    text = (REPO / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    cfg = tmp / "skillspot.toml"
    cfg.write_text(text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp}"')
                   .replace('id = "dsd-bkk-01"', 'id = "skbench-box"')
                   .replace("netlink_rcvbuf_bytes = 67108864", f"netlink_rcvbuf_bytes = {rcvbuf_mib << 20}"),
                   encoding="utf-8")
    stats_file, ready, srv_ready = tmp / "stats.json", tmp / "ready", tmp / "srv-ready"
    ct_out, ct_err = tmp / "conntrack.txt", tmp / "conntrack.err"
    ports = math.ceil(n / SPORTS)
    (tmp / "server.py").write_text(SERVER)
    (tmp / "client.py").write_text(CLIENT)
    server = bench.spawn("inet", [sys.executable, str(tmp / "server.py"), str(ports), str(seconds + 60), str(srv_ready)],
                         stdout=subprocess.PIPE, text=True)
    logger = bench.spawn("box", [sys.executable, "-m", "skillspot.cli", "-c", str(cfg), "ledger", "flowlog",
                                 "--stats-file", str(stats_file), "--ready-file", str(ready)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ask for the same 64 MiB as ours (-b). conntrack sets it with SO_RCVBUF, which the kernel caps at
    # net.core.rmem_max (global, not per namespace; we leave the host's value alone), while ours uses
    # SO_RCVBUFFORCE; the stock tool as an admin would run it is the baseline.
    with open(ct_out, "wb") as out, open(ct_err, "wb") as err:
        ct = bench.spawn("box", ["conntrack", "-E", "-o", "timestamp", "-e", "NEW,DESTROY", "-b", str(64 << 20)],
                         stdout=out, stderr=err)
    wait_for(lambda: ready.exists() and srv_ready.exists(), 30, "the flow logger and the server")
    time.sleep(1.0)  # conntrack -E has no ready signal; give it a moment to subscribe
    if logger.poll() is not None or ct.poll() is not None:
        raise SystemExit(f"a subscriber exited early: logger {logger.poll()}, conntrack {ct.poll()} "
                         f"{ct_err.read_text()[-500:]}")

    client = subprocess.run(["ip", "netns", "exec", bench.ns["phone"], sys.executable, str(tmp / "client.py"),
                             str(n), str(seconds), str(SPORTS)], capture_output=True, text=True, timeout=seconds + 60)
    if client.returncode != 0:
        raise SystemExit(f"client failed: {client.stderr[-1000:]}")
    c = json.loads(client.stdout)
    sent, gen_s = c["sent"], c["t1"] - c["t0"]
    expected = 2 * sent
    # Counts captured right at the end of the load: what each kept up with while it ran.
    s_end = read_stats(stats_file)
    ct_end = count_conntrack(ct_out)

    # Let every DESTROY arrive. The flows time out after 1 s, but the kernel reaps expired entries
    # in its GC pass, which may be scheduled up to 60 s away, and then emits them all at once.
    # Stop when both subscribers are complete, or when the kernel's table is empty and nothing
    # has changed for 5 s; bounded at 150 s. Note when each count last grew: captured / that
    # time is its rate.
    last, last_change, deadline = None, time.monotonic(), time.monotonic() + 150
    grew = [c["t1"], c["t1"]]
    next_count, entries = 0.0, None
    while time.monotonic() < deadline:
        s = read_stats(stats_file)
        now = (s.get("new", 0) + s.get("destroy", 0), sum(count_conntrack(ct_out)))
        for k in (0, 1):
            if last is None or now[k] != last[k]:
                grew[k] = time.time()
        if now != last:
            last, last_change = now, time.monotonic()
        if now[0] >= expected and now[1] >= expected:
            break
        if time.monotonic() >= next_count:
            entries, next_count = int(bench.sh("conntrack", "-C", ns="box").strip()), time.monotonic() + 1
        if entries == 0 and time.monotonic() - last_change > 5:
            break
        time.sleep(0.2)
    left = bench.sh("conntrack", "-C", ns="box").strip()
    ct_stats = bench.sh("conntrack", "-S", ns="box")
    time.sleep(1.0)
    logger_cpu = cpu_seconds(logger.pid)

    for p in (logger, ct):
        os.killpg(p.pid, signal.SIGTERM)
    out, err = logger.communicate(timeout=60)
    ct.wait(timeout=30)
    server.wait(timeout=90)
    received = json.loads(server.stdout.read().strip() or "{}").get("received")
    if logger.returncode != 0:
        raise SystemExit(f"flow logger failed ({logger.returncode}): {err[-2000:]}")
    final = json.loads(out.strip().splitlines()[-1])
    ct_new, ct_destroy = count_conntrack(ct_out)
    ct_enobufs = ct_err.read_text(errors="replace").count("ENOBUFS")

    ledger = open_ledger(tmp / "ledger.sqlite", "skbench-box")
    comp = compact(ledger, force=True)
    open_left = ledger.db.conn.execute("SELECT COUNT(*) FROM flow_staging").fetchone()[0]
    ledger.close()
    n_flows, flow_bytes, file_bytes = ledger_bytes(tmp / "ledger.sqlite")

    ours_cap = final["new"] + final["destroy"]
    ct_cap = ct_new + ct_destroy
    print(f"{sent:,} UDP flows in {gen_s:.2f} s from one client process ({sent / gen_s:,.0f} flows/s, "
          f"{expected / gen_s:,.0f} events/s offered); server received {received:,} datagrams; "
          f"2 cores, box namespace, 1 s UDP timeouts")
    print(f"kernel after the run: {left} entries left; conntrack -S: "
          f"{' '.join(sorted({w for w in ct_stats.split() if w.split('=')[0] in ('drop', 'early_drop', 'insert_failed', 'error', 'invalid') and not w.endswith('=0')}))or 'no drops'}")
    rows = [("ours (skillspot ledger flowlog)", final["new"], final["destroy"], ours_cap, final["kernel_drops"],
             s_end.get("new", 0) + s_end.get("destroy", 0)),
            ("conntrack -E -o timestamp > file", ct_new, ct_destroy, ct_cap, ct_enobufs, sum(ct_end))]
    print(f"  {'subscriber':34} {'NEW':>8} {'DESTROY':>8} {'captured':>9} {'lost':>7} {'drops*':>7}"
          f" {'ev/s in load':>12} {'all by (s)':>10} {'ev/s overall':>12}")
    for (label, new, destroy, cap, enob, at_end), done_at in zip(rows, grew):
        took = max(done_at - c["t0"], 1e-3)  # the stats file is rewritten every 0.5 s: that is the resolution
        print(f"  {label:34} {new:8,} {destroy:8,} {cap:9,} {expected - cap:7,} {enob:7} {at_end / gen_s:12,.0f}"
              f" {took:10.1f} {cap / took:12,.0f}")
    print("  * ours: messages the kernel could not queue (/proc/net/netlink Drops; DESTROYs are redelivered);"
          " conntrack -E: ENOBUFS errors, each one or more messages lost")
    print(f"  ratio ours/conntrack of events captured during the load: "
          f"{(rows[0][5] / max(rows[1][5], 1)):.2f}; of all events captured: {ours_cap / max(ct_cap, 1):.2f}")
    print(f"ours stored {final['stored']:,} events (skipped not-NAT {final['skipped_not_nat']}, write errors "
          f"{final['write_errors']}, malformed {final['malformed']}, kernel could not queue "
          f"{final['kernel_drops']:,} messages; DESTROYs among them were redelivered); after compaction: "
          f"{n_flows:,} flows in the ledger ({comp['segments']} segments, "
          f"{open_left} rows still staged): {flow_bytes / max(n_flows, 1):.2f} bytes/flow (flow tables and indexes), "
          f"{file_bytes / max(n_flows, 1):.2f} bytes/flow (whole file, {file_bytes:,} bytes)")
    if logger_cpu is not None:
        print(f"flow logger CPU: {logger_cpu:.2f} s for {final['stored']:,} events stored "
              f"({1e6 * logger_cpu / max(final['stored'], 1):.1f} us/event, start-up included)")


if __name__ == "__main__":
    main()
