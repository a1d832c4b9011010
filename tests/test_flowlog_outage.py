"""Issue 16 item 3: a flow-logger outage is visible and as small as possible.

Real namespaces (phone -> masquerading box -> internet), real conntrack. The logger is
killed with SIGKILL while UDP load runs and TCP connections are open; connections are
opened and closed while it is down; then it starts again. Every flow still open at restart
must be in the ledger (recorded from the conntrack table dump), the outage must be a gap
record that `verify` shows and that marks `who` answers inside it as possibly incomplete.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.db import open_ledger
from ledger.flows import FLAG_END_UNKNOWN, FLAG_FROM_DUMP, ip_int, flows_at
from ledger.gaps import gaps_covering, logger_status, recent_gaps
from ledger.query import who
from ledger.records import Login, LeaseEvent, record_lease, record_login
from ledger.seal import load_or_create_key, seal, verify

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
K = 4  # TCP connections held open before the kill, and again opened while the logger is down

# Holds every accepted TCP connection open until the stop file appears (bounded), records the
# peer (the box's public address and port) of each; echoes UDP.
SERVER = r'''
import json, os, selectors, socket, sys, time
out, stop = sys.argv[1], sys.argv[2]
sel = selectors.DefaultSelector()
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("203.0.113.2", 8080)); t.listen(64); t.setblocking(False); sel.register(t, selectors.EVENT_READ, "tcp")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("203.0.113.2", 9999)); u.setblocking(False)
sel.register(u, selectors.EVENT_READ, "udp")
peers, held = [], []
def dump():
    open(out + ".tmp", "w").write(json.dumps(peers)); os.replace(out + ".tmp", out)
dump()
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists(stop):
    for key, _ in sel.select(0.2):
        if key.data == "tcp":
            c, peer = t.accept(); held.append(c); peers.append([peer[0], peer[1], time.time()]); dump()
        else:
            try:
                while True:
                    d, peer = u.recvfrom(64); u.sendto(d, peer)
            except BlockingIOError:
                pass
'''

# Opens N TCP connections and holds them until the stop file appears (bounded); prints their
# local ports once they are all open. With a third argument "short": close them at once.
CLIENT = r'''
import json, os, socket, sys, time
n, stop = int(sys.argv[1]), sys.argv[2]
held = []
for i in range(n):
    s = socket.create_connection(("203.0.113.2", 8080), timeout=10); held.append(s)
print(json.dumps([s.getsockname()[1] for s in held]), flush=True)
if len(sys.argv) > 3:
    import struct
    for s in held:
        # Reset, not FIN: the connection's conntrack entry then ends within the 1 s close timeout.
        s.sendall(b"bye"); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
    sys.exit(0)
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists(stop):
    time.sleep(0.1)
'''

# UDP load: one datagram per flow, each from its own port, about 400 flows/s, bounded.
LOAD = r'''
import os, socket, sys, time
stop = sys.argv[1]
deadline, i = time.time() + 90, 0
while time.time() < deadline and not os.path.exists(stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.77.0.2", 20000 + i % 20000))
    s.sendto(b"x", ("203.0.113.2", 9999)); s.close(); i += 1
    time.sleep(0.0025)
print(i)
'''


def sh(*args: str, ns: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60, **kw)


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def net():
    tag = f"so{uuid.uuid4().hex[:6]}"
    ns = {"phone": f"{tag}-phone", "box": f"{tag}-box", "inet": f"{tag}-inet"}
    procs: list[subprocess.Popen] = []
    made: list[str] = []
    try:
        for n in ns.values():
            sh("ip", "netns", "add", n)
            made.append(n)
        for a, b, na, nb in ((f"{tag}p", f"{tag}l", "phone", "box"), (f"{tag}w", f"{tag}i", "box", "inet")):
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "netns", ns[na])
            sh("ip", "link", "set", b, "netns", ns[nb])
        for name, dev, addr in ((ns["phone"], f"{tag}p", "10.77.0.2/24"), (ns["box"], f"{tag}l", "10.77.0.1/24"),
                                (ns["box"], f"{tag}w", "203.0.113.1/24"), (ns["inet"], f"{tag}i", "203.0.113.2/24")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=name)
            sh("ip", "link", "set", dev, "up", ns=name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        sh("ip", "route", "add", "default", "via", "10.77.0.1", ns=ns["phone"])
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns["box"])
        rules = (f'table ip skl_nat {{\n chain postrouting {{\n  type nat hook postrouting priority 100;\n'
                 f'  oifname "{tag}w" meta l4proto {{ tcp, udp }} masquerade to :30000-39999\n }}\n}}\n')
        sh("nft", "-c", "-f", "-", ns=ns["box"], input=rules)
        sh("nft", "-f", "-", ns=ns["box"], input=rules)
        for k in ("nf_conntrack_tcp_timeout_time_wait=1", "nf_conntrack_tcp_timeout_close=1",
                  "nf_conntrack_udp_timeout=1", "nf_conntrack_udp_timeout_stream=1"):
            sh("sysctl", "-qw", f"net.netfilter.{k}", ns=ns["box"])
        mac = sh("cat", f"/sys/class/net/{tag}p/address", ns=ns["phone"]).stdout.strip()
        yield ns, procs, mac
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def start_logger(ns, procs, cfg, tmp_path, run: int) -> tuple[subprocess.Popen, Path, Path]:
    stats, ready = tmp_path / f"stats{run}.json", tmp_path / f"ready{run}"
    p = subprocess.Popen(["ip", "netns", "exec", ns["box"], PY, "-m", "skillspot.cli", "-c", str(cfg), "ledger",
                          "flowlog", "--stats-file", str(stats), "--ready-file", str(ready), "--seal-seconds", "0.5"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    procs.append(p)
    wait_for(lambda: ready.exists() or p.poll() is not None, 30, "the flow logger to subscribe")
    assert p.poll() is None, p.communicate()[1]
    return p, stats, ready


def test_killed_logger_leaves_a_gap_and_open_flows_are_recovered(net, tmp_path):
    ns, procs, mac = net
    text = (REPO / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    cfg = tmp_path / "skillspot.toml"
    cfg.write_text(text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
                   .replace('id = "dsd-bkk-01"', 'id = "skl-box"'), encoding="utf-8")
    ledger = open_ledger(tmp_path / "ledger.sqlite", "skl-box")
    record_lease(ledger, LeaseEvent("add", mac, "10.77.0.2", "phone", ledger.now_ms() + 3_600_000))
    login_id = record_login(ledger, Login("line", "Uphone0001", "ผู้ทดสอบ", True, False, "2026-11", mac, "10.77.0.2",
                                          ledger.now_ms() + 3_600_000))
    peers_file, stop = tmp_path / "peers.json", tmp_path / "stop"
    for name, code in (("server.py", SERVER), ("client.py", CLIENT), ("load.py", LOAD)):
        (tmp_path / name).write_text(code)
    procs.append(subprocess.Popen(["ip", "netns", "exec", ns["inet"], PY, str(tmp_path / "server.py"),
                                   str(peers_file), str(stop)], start_new_session=True))
    wait_for(peers_file.exists, 20, "the server")
    logger, stats1, _ = start_logger(ns, procs, cfg, tmp_path, 1)
    load = subprocess.Popen(["ip", "netns", "exec", ns["phone"], PY, str(tmp_path / "load.py"), str(stop)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    procs.append(load)

    def open_conns(n: int, *short: str) -> tuple[subprocess.Popen, list[int]]:
        c = subprocess.Popen(["ip", "netns", "exec", ns["phone"], PY, str(tmp_path / "client.py"), str(n), str(stop),
                              *short],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(c)
        return c, json.loads(c.stdout.readline())

    def public_port(n_peers: int) -> list[list]:
        return wait_for(lambda: (p := json.loads(peers_file.read_text())) and len(p) >= n_peers and p, 20,
                        f"{n_peers} connections at the server")

    _, before_ports = open_conns(K)
    before = public_port(K)[:K]
    stats = lambda f: json.loads(f.read_text()) if f.exists() else {}
    # Under load, the logger stores the open connections and seals them (who can read them).
    wait_for(lambda: all(who(ledger, ip, port, ledger.now_ms()) for ip, port, _ in before), 20,
             "the open connections to be attributable")
    wait_for(lambda: stats(stats1).get("stored", 0) > 200, 20, "the UDP load to be logged")

    os.killpg(logger.pid, signal.SIGKILL)
    logger.wait(timeout=10)
    t_kill = ledger.now_ms()
    # While the logger is down: connections that stay open, and one that opens and closes.
    _, during_ports = open_conns(K)
    short, _ = open_conns(1, "short")
    short.wait(timeout=20)
    peers = public_port(2 * K + 1)
    during, lost = peers[K:2 * K], peers[2 * K]
    wait_for(lambda: not sh("conntrack", "-L", "-p", "tcp", "--reply-port-dst", str(lost[1]), ns=ns["box"],
                            check=False).stdout.strip(), 30, "the short connection to leave conntrack")
    t_lost = int(lost[2] * 1000)

    logger2, stats2, _ = start_logger(ns, procs, cfg, tmp_path, 2)
    t_ready = ledger.now_ms()
    s2 = wait_for(lambda: (s := stats(stats2)) and "dumped" in s and s, 20, "the second run's stats")
    assert s2["dumped"] >= K and s2["gap_ms"] > 0
    # UDP flows seen opening before the kill (1 s timeouts) ended unseen: closed, end unknown.
    assert s2["closed_unseen"] > 0
    assert ledger.db.conn.execute("SELECT COUNT(*) FROM flow_staging WHERE open = 0 AND flags & ?",
                                  [FLAG_END_UNKNOWN]).fetchone()[0] >= s2["closed_unseen"]

    # Every connection open at restart is in the ledger, once, with the person.
    now = ledger.now_ms()
    for (ip, port, opened), phone_port in zip(before + during, before_ports + during_ports):
        answers = [a for a in who(ledger, ip, port, now) if a["flow"]["proto"] == "tcp"]  # UDP load shares ports
        assert len(answers) == 1, (port, answers)
        f = answers[0]["flow"]
        assert f["open"] and (f["src_ip"], f["src_port"], f["dst_port"]) == ("10.77.0.2", phone_port, 8080)
        assert answers[0]["session"]["login_id"] == login_id
        assert abs(f["start_ms"] - opened * 1000) < 2000  # the kernel's start time, not the restart
    for ip, port, _ in during:
        flows = [f for f in flows_at(ledger, ip_int(ip), port, now) if f.proto == 6]
        assert len(flows) == 1 and flows[0].flags & FLAG_FROM_DUMP

    # The gap: from the last heartbeat before the kill to the new subscription.
    gaps = recent_gaps(ledger, 0)
    assert len(gaps) == 1, gaps
    g = gaps[0]
    assert g["reason"] == "logger killed or crashed" and not g["ongoing"]
    assert t_kill - 3000 <= g["from_ms"] <= t_kill, (g, t_kill)
    assert t_kill < g["to_ms"] <= t_ready
    assert g["from_ms"] < t_lost < g["to_ms"]
    # The connection that opened and closed while the logger was down left no flow, but the
    # answer says the ledger may be incomplete then; an answer inside the gap says so too.
    # (UDP load flows may have used the same port number: only TCP is that connection.)
    assert [a for a in who(ledger, lost[0], lost[1], t_lost) if a["flow"]["proto"] == "tcp"] == []
    assert [x["id"] for x in gaps_covering(ledger, t_lost)] == [g["id"]]
    inside = [a for a in who(ledger, during[0][0], during[0][1], max(int(during[0][2] * 1000) + 50, g["from_ms"] + 1))
              if a["flow"]["proto"] == "tcp"]
    assert inside and inside[0]["may_be_incomplete"] and inside[0]["gaps"][0]["id"] == g["id"]
    wait_for(lambda: ledger.now_ms() > g["to_ms"] + 1, 5, "time to pass the gap's end")
    outside = [a for a in who(ledger, before[0][0], before[0][1], ledger.now_ms(), slack_ms=0)
               if a["flow"]["proto"] == "tcp"]
    assert outside and not outside[0]["may_be_incomplete"]
    assert logger_status(ledger)["running"]

    stop.write_text("stop")
    load.wait(timeout=30)
    sh("conntrack", "-F", ns=ns["box"])
    logger2.send_signal(signal.SIGTERM)
    out, err = logger2.communicate(timeout=30)
    assert logger2.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["kernel_drops"] == final["malformed"] == final["write_errors"] == 0
    key = load_or_create_key(tmp_path)
    seal(ledger, key)
    rep = verify(ledger, key.public_key())
    assert rep.ok, rep.problems
    # verify shows the gap; a clean stop is an outage too, until the next start.
    from skillspot.cli import main
    res = CliRunner().invoke(main, ["-c", str(cfg), "ledger", "verify"])
    assert res.exit_code == 0, res.output
    assert "GAP: flow logger not listening" in res.output and "logger killed or crashed" in res.output
    assert "now (ongoing)" in res.output and "logger stopped" in res.output
    ledger.close()


# Runs inside a scratch namespace: the real FlowLogger with a socket buffer far too small for a
# burst of new flows, so the kernel cannot queue some NEW events while the logger runs.
OVERFLOW = r"""
import json, socket, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from ledger.db import open_ledger
from ledger.flowlog import FlowLogger
from ledger.gaps import recent_gaps
d = Path(sys.argv[2])
led = open_ledger(d / "ledger.sqlite", "skl-box")
ready = d / "ready"
lg = FlowLogger(led, d, 90, rcvbuf=4096, nat_only=False, ready_file=ready, flush_seconds=0.2)
def load():
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 7001))
    for i in range(400):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("127.0.0.1", 20000 + i))
        c.sendto(b"x", ("127.0.0.1", 7001)); c.close()
    while lg.stats.kernel_drops == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    lg.stop()
threading.Thread(target=load, daemon=True).start()
stats = lg.run()
print(json.dumps({"drops": stats.kernel_drops, "new": stats.new,
                  "gaps": [g for g in recent_gaps(led, 0) if g["reason"] == "netlink buffer overflow"]}))
"""


def test_lost_new_events_while_running_are_a_gap_too(tmp_path):
    from tests.netns_util import in_ns, scratch_namespace
    with scratch_namespace("skov") as ns:
        assert in_ns(ns, ["ip", "link", "set", "lo", "up"]).returncode == 0
        # Any ct rule turns conntrack on in the namespace.
        assert in_ns(ns, ["nft", "-f", "-"], input="table ip skov {\n chain out {\n  type filter hook output "
                                                  "priority 0;\n  ct state new counter\n }\n}\n").returncode == 0
        done = in_ns(ns, [PY, "-c", OVERFLOW, str(REPO), str(tmp_path)], timeout=90)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["drops"] > 0 and out["new"] < 400  # the buffer really overflowed
    # Every message the kernel could not queue is accounted for in a gap of its time.
    assert out["gaps"] and sum(g["detail"]["messages_not_queued"] for g in out["gaps"]) == out["drops"]
    assert all(g["from_ms"] <= g["to_ms"] for g in out["gaps"])
