"""IPv6 flows logged by the real flow logger from real conntrack events: no NAT, the device's
own address, its MAC from the box's neighbour table, and `who` by IPv6 address names the
person; a connection opened while the logger is down is recovered from the table dump."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ledger.db import open_ledger
from ledger.flows import FLAG_FROM_DUMP
from ledger.flows6 import flows6_at, ip6_bytes, who6
from ledger.gaps import recent_gaps
from ledger.records import Login, record_login
from tests.test_flowlog_outage import sh, wait_for

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PHONE6, SERVER6 = "2001:db8:1::2", "2001:db8:2::2"

SERVER = r'''
import json, os, socket, sys, time
out, stop = sys.argv[1], sys.argv[2]
t = socket.socket(socket.AF_INET6); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("2001:db8:2::2", 8080)); t.listen(16); t.settimeout(0.2)
peers, held = [], []
open(out, "w").write("[]")
deadline = time.time() + 90
while time.time() < deadline and not os.path.exists(stop):
    try:
        c, peer = t.accept()
    except socket.timeout:
        continue
    held.append(c); peers.append([peer[0], peer[1]])
    open(out + ".tmp", "w").write(json.dumps(peers)); os.replace(out + ".tmp", out)
'''
# Holds one connection until its stop file appears; then closes it with a reset (its conntrack
# entry ends within the box's 1 s close timeout).
CLIENT = r'''
import json, os, socket, struct, sys, time
stop = sys.argv[1]
s = socket.create_connection(("2001:db8:2::2", 8080), timeout=10)
print(json.dumps(s.getsockname()[1]), flush=True)
deadline = time.time() + 90
while time.time() < deadline and not os.path.exists(stop):
    time.sleep(0.1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
'''


@pytest.fixture
def net6():
    tag = f"s6{uuid.uuid4().hex[:6]}"
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
        for name, dev, addr in ((ns["phone"], f"{tag}p", f"{PHONE6}/64"), (ns["box"], f"{tag}l", "2001:db8:1::1/64"),
                                (ns["box"], f"{tag}w", "2001:db8:2::1/64"), (ns["inet"], f"{tag}i", f"{SERVER6}/64")):
            sh("ip", "-6", "addr", "add", addr, "dev", dev, "nodad", ns=name)
            sh("ip", "link", "set", dev, "up", ns=name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        sh("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1", ns=ns["phone"])
        sh("ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::1", ns=ns["inet"])
        sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=ns["box"])
        sh("sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_close=1", ns=ns["box"])
        # Any rule using ct turns conntrack on for IPv6 in the box.
        rules = "table ip6 skl6 {\n chain forward6 {\n  type filter hook forward priority 0;\n  ct state new counter\n }\n}\n"
        sh("nft", "-c", "-f", "-", ns=ns["box"], input=rules)
        sh("nft", "-f", "-", ns=ns["box"], input=rules)
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


def test_ipv6_flow_is_logged_with_the_mac_and_attributed(net6, tmp_path):
    ns, procs, mac = net6
    text = (REPO / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    cfg = tmp_path / "skillspot.toml"
    cfg.write_text(text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
                   .replace('id = "dsd-bkk-01"', 'id = "skl-box"'), encoding="utf-8")
    ledger = open_ledger(tmp_path / "ledger.sqlite", "skl-box")
    login_id = record_login(ledger, Login("line", "Uipv6phone", "โทรศัพท์ v6", True, False, "2026-11", mac,
                                          "10.77.0.2", ledger.now_ms() + 3_600_000))
    peers, stop = tmp_path / "peers.json", tmp_path / "stop"
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    procs.append(subprocess.Popen(["ip", "netns", "exec", ns["inet"], PY, str(tmp_path / "server.py"), str(peers),
                                   str(stop)], start_new_session=True))
    wait_for(peers.exists, 20, "the server")

    def logger(run: int) -> subprocess.Popen:
        ready = tmp_path / f"ready{run}"
        p = subprocess.Popen(["ip", "netns", "exec", ns["box"], PY, "-m", "skillspot.cli", "-c", str(cfg), "ledger",
                              "flowlog", "--ready-file", str(ready), "--stats-file", str(tmp_path / f"stats{run}.json"),
                              "--seal-seconds", "0.5"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        procs.append(p)
        wait_for(lambda: ready.exists() or p.poll() is not None, 30, "the flow logger")
        assert p.poll() is None, p.communicate()[1]
        return p

    def connect(until: Path = stop) -> int:
        c = subprocess.Popen(["ip", "netns", "exec", ns["phone"], PY, str(tmp_path / "client.py"), str(until)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(c)
        return json.loads(c.stdout.readline())

    first = logger(1)
    port = connect()
    seen = wait_for(lambda: (p := json.loads(peers.read_text())) and p, 20, "the server to see the phone")
    assert seen[0] == [PHONE6, port]  # no translation: the server saw the device's own address
    reset = tmp_path / "reset"
    port3 = connect(reset)  # one that will end while the logger is down
    wait_for(lambda: who6(ledger, PHONE6, port3, ledger.now_ms()), 20, "the third connection to be logged")
    try:
        answers = wait_for(lambda: who6(ledger, PHONE6, port, ledger.now_ms()), 20, "the IPv6 flow to be logged")
    except AssertionError:
        first.send_signal(signal.SIGTERM)  # show why: the logger's own account
        raise AssertionError(first.communicate(timeout=30)) from None
    (a,) = answers
    assert a["flow"]["open"] and a["flow"]["mac"] == mac and a["flow"]["dst_port"] == 8080
    assert a["session"]["login_id"] == login_id

    # Down, a new connection, up again: the table dump records it (with the MAC).
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    port2 = connect()
    wait_for(lambda: len(json.loads(peers.read_text())) == 3, 20, "the second connection")
    reset.write_text("reset")
    wait_for(lambda: not sh("conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--orig-port-src", str(port3),
                            ns=ns["box"], check=False).stdout.strip(), 30, "the reset connection to leave conntrack")
    second = logger(2)
    (b,) = wait_for(lambda: who6(ledger, PHONE6, port2, ledger.now_ms()), 20, "the recovered IPv6 flow")
    assert b["flow"]["mac"] == mac and b["session"]["login_id"] == login_id
    assert flows6_at(ledger, ip6_bytes(PHONE6), port2, ledger.now_ms())[0]["flags"] & FLAG_FROM_DUMP
    assert len(who6(ledger, PHONE6, port, ledger.now_ms())) == 1  # the first one is not recorded twice
    # The one that ended while the logger was down: closed at restart, end unknown, MAC kept.
    (gap,) = recent_gaps(ledger, 0)
    (c,) = who6(ledger, PHONE6, port3, gap["to_ms"] - 1)
    assert c["flow"]["end_unknown"] and not c["flow"]["open"] and c["flow"]["mac"] == mac
    assert c["may_be_incomplete"]  # that moment is inside the logger's gap
    stop.write_text("stop")
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["mac_unknown6"] == 0
    ledger.close()
