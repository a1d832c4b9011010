"""DNS from devices not logged in cannot carry a tunnel (issue 16, item 4).

Namespaces of this run: a phone, the box (the rendered nftables ruleset and the rendered
dnsmasq, both real) and an upstream resolver standing in for the tunnel's authoritative server
(a dnsmasq answering every name, plus one ~1 KB TXT record). The phone sends a tunnel-shaped
stream (unique ~200-byte names, far faster than the budget) and the test measures what gets
through: bounded by the per-device budget before login, unbounded after.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from base.config import load_config
from netcfg.ruleset import DNS_MAX_ANSWER_BYTES, RulesetParams, render_ruleset
from provisioning.dnsmasq import DnsmasqFiles, render_dnsmasq

pytestmark = pytest.mark.netns

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "skillspot.toml"
CLIENT = HERE / "dns_client.py"
BOX_LAN, PHONE_IP, PHONE_MAC = "10.99.0.1", "10.99.0.60", "02:5e:c0:00:00:01"
BOX_WAN, UPSTREAM = "198.51.100.2", "198.51.100.1"  # TEST-NET-2, only inside our namespaces
RATE, BURST = 2, 80  # the example config's defaults, asserted below
STREAM_QPS, STREAM_SECONDS = 60, 6
BIG_TXT = ",".join(["a" * 250, "b" * 250, "c" * 250, "d" * 200])  # a ~1 KB answer


def sh(*argv: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


@dataclass
class DnsOffice:
    phone: str
    box: str
    upstream: str
    workdir: Path

    def client(self, *args: str, timeout: float = 30) -> dict:
        """Run the DNS client in the phone namespace; its JSON result."""
        out = sh(sys.executable, str(CLIENT), *args, ns=self.phone, timeout=timeout)
        return json.loads(out.stdout)

    def authorise(self) -> None:
        # What the gate does at login (the test is about the ruleset, so it writes the set itself).
        sh("nft", "add", "element", "inet", "skillspot", "authorised",
           f"{{ {PHONE_MAC} . {PHONE_IP} timeout 5m }}", ns=self.box)


def wait_udp_dns(ns: str, server: str, deadline_s: float = 15) -> None:
    code = ("import socket,sys,time\n"
            f"end=time.monotonic()+{deadline_s}\n"
            "q=b'\\x00\\x01\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x05ready\\x04test\\x00\\x00\\x01\\x00\\x01'\n"
            "while time.monotonic()<end:\n"
            "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.3)\n"
            f"    s.sendto(q,({server!r},53))\n"
            "    try: s.recv(512); sys.exit(0)\n"
            "    except OSError: time.sleep(0.1)\n"
            "sys.exit(1)\n")
    assert sh(sys.executable, "-c", code, ns=ns, check=False, timeout=deadline_s + 5).returncode == 0, \
        f"no DNS answer from {server} in {ns}"


@pytest.fixture
def dns_office(tmp_path):
    suffix = secrets.token_hex(3)
    names = {"phone": f"sdp-{suffix}", "box": f"sdb-{suffix}", "upstream": f"sdu-{suffix}"}
    procs: list[subprocess.Popen] = []
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
        pv, bv1, bv2, uv = f"sdp{suffix}", f"sdl{suffix}", f"sdw{suffix}", f"sdu{suffix}"
        sh("ip", "link", "add", pv, "type", "veth", "peer", "name", bv1)
        sh("ip", "link", "add", bv2, "type", "veth", "peer", "name", uv)
        for ifname, ns, new in ((pv, names["phone"], "eth0"), (bv1, names["box"], "lan0"),
                                (bv2, names["box"], "wan0"), (uv, names["upstream"], "eth0")):
            sh("ip", "link", "set", ifname, "netns", ns)
            sh("ip", "link", "set", ifname, "name", new, ns=ns)
            sh("ip", "link", "set", new, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "set", "eth0", "address", PHONE_MAC, ns=names["phone"])
        sh("ip", "addr", "add", f"{PHONE_IP}/24", "dev", "eth0", ns=names["phone"])
        sh("ip", "route", "add", "default", "via", BOX_LAN, ns=names["phone"])
        sh("ip", "addr", "add", f"{BOX_LAN}/24", "dev", "lan0", ns=names["box"])
        sh("ip", "addr", "add", f"{BOX_WAN}/24", "dev", "wan0", ns=names["box"])
        sh("ip", "addr", "add", f"{UPSTREAM}/24", "dev", "eth0", ns=names["upstream"])

        text = (EXAMPLE.read_text(encoding="utf-8")
                .replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path / "data"}"')
                .replace('lan_interface = "wlan0"', 'lan_interface = "lan0"')
                .replace('wan_interface = "eth0"', 'wan_interface = "wan0"')
                .replace('upstream_dns = ["1.1.1.1", "8.8.8.8"]', f'upstream_dns = ["{UPSTREAM}"]'))
        (tmp_path / "data").mkdir()
        cfg_path = tmp_path / "skillspot.toml"
        cfg_path.write_text(text, encoding="utf-8")
        cfg = load_config(cfg_path)
        params = RulesetParams.from_config(cfg.network, cfg.portal)
        assert (params.dns_queries_per_second, params.dns_query_burst) == (RATE, BURST)
        ruleset = tmp_path / "ruleset.nft"
        ruleset.write_text(render_ruleset(params))
        sh("nft", "-f", str(ruleset), ns=names["box"])
        files = DnsmasqFiles(conf=tmp_path / "dnsmasq.conf", lease_hook=tmp_path / "hook",
                             lease_file=tmp_path / "data" / "leases")
        files.conf.write_text(render_dnsmasq(cfg, files))

        def spawn(ns: str, argv: list[str], log: str) -> None:
            with open(tmp_path / log, "wb") as out:
                procs.append(subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))

        spawn(names["upstream"], ["dnsmasq", "-k", "--no-resolv", "--no-hosts", "--pid-file", "--log-facility=-",
                                  f"--listen-address={UPSTREAM}", "--bind-interfaces", "--address=/#/203.0.113.20", "--address=/#/2001:db8::20",
                                  f"--txt-record=big.tun.test,{BIG_TXT}", "--txt-record=small.tun.test,hello"],
              "upstream.log")
        spawn(names["box"], ["dnsmasq", "-k", "--pid-file", "--log-facility=-", f"--conf-file={files.conf}"], "box.log")
        wait_udp_dns(names["box"], UPSTREAM)
        wait_udp_dns(names["box"], BOX_LAN)  # from the box itself: not metered, so no budget spent
        yield DnsOffice(workdir=tmp_path, **names)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_tunnel_shaped_stream_before_login_is_held_to_the_budget(dns_office):
    got = dns_office.client("stream", BOX_LAN, str(STREAM_QPS), str(STREAM_SECONDS), timeout=60)
    assert got["sent"] == STREAM_QPS * STREAM_SECONDS
    # The burst is answered (a portal visit works), then only RATE a second.
    bound = BURST + RATE * (STREAM_SECONDS + 2) + 3
    assert BURST - 5 <= got["answered"] <= bound, got
    tail = sum(got["per_second"][3:STREAM_SECONDS])  # seconds 3..5: the burst is long spent
    assert tail <= RATE * (STREAM_SECONDS - 3) + 2, got
    # What a tunnel would carry after the burst: names up, answers down, per second.
    up = got["name_bytes"] / got["answered"] * RATE
    down = DNS_MAX_ANSWER_BYTES * RATE
    print(f"\nunauthorised: sent {got['sent']} in {STREAM_SECONDS}s, answered {got['answered']} "
          f"({got['per_second']}); sustained tunnel bound ~{up:.0f} B/s up, <= {down} B/s down")


def test_after_login_the_same_stream_is_not_limited(dns_office):
    dns_office.authorise()
    got = dns_office.client("stream", BOX_LAN, str(STREAM_QPS), "3", timeout=60)
    assert got["answered"] >= got["sent"] - 2, got
    assert dns_office.client("one", BOX_LAN, "big.tun.test", "16")["answered"]


def test_big_answers_and_dns_over_tcp_are_refused_before_login(dns_office):
    small = dns_office.client("one", BOX_LAN, "small.tun.test", "16")
    assert small["answered"] and small["ancount"] == 1, small
    big = dns_office.client("one", BOX_LAN, "big.tun.test", "16")
    assert big == {"answered": False}
    assert dns_office.client("tcp", BOX_LAN, "small.tun.test") == {"refused": True}
    dns_office.authorise()  # the same requests after login: answered
    big = dns_office.client("one", BOX_LAN, "big.tun.test", "16")
    assert big["answered"] and big["bytes"] > DNS_MAX_ANSWER_BYTES, big
    assert dns_office.client("tcp", BOX_LAN, "small.tun.test")["refused"] is False


def test_a_normal_portal_visit_resolves_within_the_budget(dns_office):
    # A phone joining asks for its OS's probe hosts, the portal and the LINE hosts. Here one
    # device asks for every OS's probe hosts at once, A and AAAA: all answered.
    from portal.probes import PROBES
    hosts = sorted({h for p in PROBES for h in p.hosts} | {"wifi.dsd.go.th", "access.line.me", "api.line.me",
                                                           "scdn.line-apps.com", "static.line-scdn.net"})
    answers = dns_office.client("many", BOX_LAN, *hosts, timeout=120)
    asked = len(answers)
    refused = [a for a in answers if not a["answered"] or a["rcode"] != 0 or a["ancount"] < 1]
    assert not refused, refused
    assert asked <= BURST, f"the visit needs {asked} queries, more than the burst {BURST}"
