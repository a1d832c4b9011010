"""Real traffic from a phone namespace through a masquerading box namespace to an internet
namespace: the flow logger (real conntrack events over netlink) must record the translation
the internet-side server actually saw, and `who` must name the logged-in person."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.db import open_ledger
from ledger.flows import compact
from ledger.query import who
from ledger.records import Login, LeaseEvent, record_lease, record_login
from ledger.seal import load_or_create_key, seal, verify

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
N_TCP, N_UDP, TCP_BYTES = 6, 6, 20_000

SERVER = r'''
import json, socket, sys, threading, time
out = sys.argv[1]
seen = {"tcp": [], "udp": []}
lock = threading.Lock()
def dump():
    with lock:
        open(out + ".tmp", "w").write(json.dumps(seen)); __import__("os").replace(out + ".tmp", out)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("203.0.113.2", 8080)); t.listen(64); t.settimeout(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("203.0.113.2", 9999)); u.settimeout(0.2)
dump()
deadline = time.time() + 90
while time.time() < deadline:
    try:
        c, peer = t.accept()
        n = 0
        c.settimeout(10)
        while True:
            b = c.recv(65536)
            if not b: break
            n += len(b)
        c.close()
        with lock: seen["tcp"].append([peer[0], peer[1], n])
        dump()
    except socket.timeout:
        pass
    try:
        while True:
            d, peer = u.recvfrom(2048)
            u.sendto(d, peer)
            with lock: seen["udp"].append([peer[0], peer[1], len(d)])
            dump()
    except socket.timeout:
        pass
'''

CLIENT = r'''
import json, socket, sys
ports = {"tcp": [], "udp": []}
for i in range(%d):
    s = socket.create_connection(("203.0.113.2", 8080), timeout=10)
    ports["tcp"].append(s.getsockname()[1]); s.sendall(b"x" * %d); s.close()
for i in range(%d):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(b"hello", ("203.0.113.2", 9999)); s.recvfrom(100)
    ports["udp"].append(s.getsockname()[1]); s.close()
print(json.dumps(ports))
''' % (N_TCP, TCP_BYTES, N_UDP)


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
    tag = f"skl{os.getpid() % 100000}"
    ns = {"phone": f"{tag}-phone", "box": f"{tag}-box", "inet": f"{tag}-inet"}
    procs: list[subprocess.Popen] = []
    try:
        for n in ns.values():
            sh("ip", "netns", "add", n)
        sh("ip", "link", "add", f"{tag}p", "type", "veth", "peer", "name", f"{tag}l")
        sh("ip", "link", "set", f"{tag}p", "netns", ns["phone"])
        sh("ip", "link", "set", f"{tag}l", "netns", ns["box"])
        sh("ip", "link", "add", f"{tag}w", "type", "veth", "peer", "name", f"{tag}i")
        sh("ip", "link", "set", f"{tag}w", "netns", ns["box"])
        sh("ip", "link", "set", f"{tag}i", "netns", ns["inet"])
        for name, dev, addr in ((ns["phone"], f"{tag}p", "10.77.0.2/24"), (ns["box"], f"{tag}l", "10.77.0.1/24"),
                                (ns["box"], f"{tag}w", "203.0.113.1/24"), (ns["inet"], f"{tag}i", "203.0.113.2/24")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=name)
            sh("ip", "link", "set", dev, "up", ns=name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        sh("ip", "route", "add", "default", "via", "10.77.0.1", ns=ns["phone"])
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns["box"])
        # A fixed port range forces a real translation, so the test tells src and public ports apart.
        rules = (f'table ip skl_nat {{\n chain postrouting {{\n  type nat hook postrouting priority 100;\n'
                 f'  oifname "{tag}w" meta l4proto {{ tcp, udp }} masquerade to :30000-30999\n }}\n}}\n')
        sh("nft", "-c", "-f", "-", ns=ns["box"], input=rules)
        sh("nft", "-f", "-", ns=ns["box"], input=rules)
        # Only in the box namespace: short TIME_WAIT so TCP DESTROY events come quickly.
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1", ns=ns["box"])
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_close=1", ns=ns["box"])
        mac = sh("cat", f"/sys/class/net/{tag}p/address", ns=ns["phone"]).stdout.strip()
        yield ns, procs, mac
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for n in ns.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def test_real_masqueraded_traffic_is_attributed(net, tmp_path):
    ns, procs, mac = net
    text = (REPO / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    cfg = tmp_path / "skillspot.toml"
    cfg.write_text(text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
                   .replace('id = "dsd-bkk-01"', 'id = "skl-box"')
                   .replace("housekeeping_seconds = 60", "housekeeping_seconds = 5"), encoding="utf-8")
    ledger = open_ledger(tmp_path / "ledger.sqlite", "skl-box")
    record_lease(ledger, LeaseEvent("add", mac, "10.77.0.2", "phone", ledger.now_ms() + 3_600_000))
    login_id = record_login(ledger, Login("line", "Uphone0000", "โทรศัพท์ ทดสอบ", True, False, "2026-11", mac,
                                          "10.77.0.2", ledger.now_ms() + 3_600_000))
    seen_file, stats_file, ready = tmp_path / "seen.json", tmp_path / "stats.json", tmp_path / "ready"
    (tmp_path / "server.py").write_text(SERVER)
    procs.append(subprocess.Popen(["ip", "netns", "exec", ns["inet"], PY, str(tmp_path / "server.py"), str(seen_file)]))
    logger = subprocess.Popen(["ip", "netns", "exec", ns["box"], PY, "-m", "skillspot.cli", "-c", str(cfg), "ledger",
                               "flowlog", "--stats-file", str(stats_file), "--ready-file", str(ready)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(logger)
    wait_for(lambda: ready.exists() and seen_file.exists(), 30, "the flow logger and the server to start")
    t_start = ledger.now_ms()
    client = sh(PY, "-c", CLIENT, ns=ns["phone"])
    phone_ports = json.loads(client.stdout)
    seen = wait_for(lambda: (s := json.loads(seen_file.read_text())) and len(s["tcp"]) == N_TCP
                    and len(s["udp"]) == N_UDP and s, 30, "the server to see every connection")
    stats = lambda: json.loads(stats_file.read_text()) if stats_file.exists() else {}
    # UDP flows are still open now: attribution must already work from the NEW events.
    wait_for(lambda: stats().get("stored", 0) >= N_TCP + N_UDP, 20, "NEW events stored")
    udp_ip, udp_port, _ = seen["udp"][0]
    # Readable once the logger has sealed them (every --seal-seconds, default 5 s).
    open_answer = wait_for(lambda: who(ledger, udp_ip, udp_port, ledger.now_ms()), 15, "the open flow to be sealed")
    assert open_answer[0]["flow"]["open"] and open_answer[0]["session"]["login_id"] == login_id
    # TCP ends by itself (short TIME_WAIT); flushing the table ends the UDP flows.
    wait_for(lambda: stats().get("destroy", 0) >= N_TCP, 60, "TCP DESTROY events")
    sh("conntrack", "-F", ns=ns["box"])
    wait_for(lambda: stats().get("destroy", 0) >= N_TCP + N_UDP and stats().get("stored", 0) >= 2 * (N_TCP + N_UDP),
             20, "every DESTROY event stored")
    logger.send_signal(signal.SIGTERM)
    out, err = logger.communicate(timeout=30)
    assert logger.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["enobufs"] == final["kernel_drops"] == final["malformed"] == final["write_errors"] == 0
    assert final["new"] >= N_TCP + N_UDP

    compact(ledger, force=True)
    t_end = ledger.now_ms()
    for proto, phone_list in (("tcp", phone_ports["tcp"]), ("udp", phone_ports["udp"])):
        for (pub_ip, pub_port, nbytes), phone_port in zip(seen[proto], phone_list):
            assert pub_ip == "203.0.113.1" and 30000 <= pub_port <= 30999
            hits = [a for a in who(ledger, pub_ip, pub_port, (t_start + t_end) // 2, slack_ms=t_end - t_start)
                    if a["flow"]["proto"] == proto and not a["flow"]["open"]]
            assert len(hits) == 1, (proto, pub_port, hits)
            f = hits[0]["flow"]
            assert (f["src_ip"], f["src_port"], f["dst_ip"]) == ("10.77.0.2", phone_port, "203.0.113.2")
            assert t_start - 1000 <= f["start_ms"] <= f["end_ms"] <= t_end
            if proto == "tcp":
                assert f["bytes_orig"] >= TCP_BYTES  # conntrack accounting is on
                assert f["dst_port"] == 8080
            assert hits[0]["session"]["login_id"] == login_id and hits[0]["session"]["mac"] == mac
    # Everything the logger wrote is sealed and verifies.
    key = load_or_create_key(tmp_path)
    seal(ledger, key)
    rep = verify(ledger, key.public_key())
    assert rep.ok, rep.problems
    kinds = {k for (k,) in ledger.db.conn.execute("SELECT kind FROM events")}
    assert {"flowlog_start", "flowlog_stop"} <= kinds
    assert ledger.db.conn.execute("SELECT COUNT(*) FROM clock_samples").fetchone()[0] >= 1
