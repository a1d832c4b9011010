"""Our conntrack message parser (ledger.ctevents): against pyroute2's decoder on real kernel
events from a scratch namespace, and on hand-built malformed messages."""
from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from ledger.ctevents import (KIND_DESTROY, KIND_NEW, KIND_OTHER, MalformedMessage, dump_request, parse_message,
                             read_netlink_drops, split_messages)
from ledger.flows import STAGING_COLUMNS
from tests.netns_util import in_ns, scratch_namespace

REPO = Path(__file__).resolve().parent.parent

# Runs inside the scratch namespace: subscribe, make UDP and TCP flows on loopback (one port
# SNATed, one DNATed, so the reply tuple differs from the original), flush the table so every
# DESTROY comes at once, and print the raw datagrams as hex.
CAPTURE = r'''
import json, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ledger.ctevents import ConntrackSubscription
for k in ("nf_conntrack_acct", "nf_conntrack_timestamp"):
    open(f"/proc/sys/net/netfilter/{k}", "w").write("1")
sub = ConntrackSubscription(4 << 20)
srv = socket.socket(); srv.bind(("127.0.0.1", 7100)); srv.listen(8)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 7001))
for port in (7000, 7001, 7002, 7003):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.sendto(b"x" * port, ("127.0.0.1", port)); c.close()
t = socket.create_connection(("127.0.0.1", 7100)); a, _ = srv.accept(); t.sendall(b"y" * 5000); a.recv(10000)
t.close(); a.close()
time.sleep(0.3)
subprocess.run(["conntrack", "-F"], capture_output=True)
got, deadline = [], time.monotonic() + 3
while time.monotonic() < deadline:
    got += sub.receive(1000)
    time.sleep(0.05)
print(json.dumps({"datagrams": [d.hex() for d in got], "drops": sub.kernel_drops()}))
'''
RULES = '''table ip skt {
 chain out {
  type nat hook output priority -100;
  udp dport 7000 dnat to 127.0.0.1:7001
 }
 chain post {
  type nat hook postrouting priority 100;
  udp dport 7002 snat to 127.0.0.5:40000-40010
 }
}
'''


def reference(data: bytes) -> tuple[str, tuple | None]:
    """The same message decoded by pyroute2 (what the logger used before), as a staging row."""
    m = nfct_msg(data)
    m.decode()
    kind = {0: KIND_NEW, 2: KIND_DESTROY}.get(m["header"]["type"] & 0xFF, KIND_OTHER)

    def tup(name):
        t = m.get_attr(name)
        ip, pr = t.get_attr("CTA_TUPLE_IP"), t.get_attr("CTA_TUPLE_PROTO")
        return (int(ipaddress.IPv4Address(ip.get_attr("CTA_IP_V4_SRC"))),
                int(ipaddress.IPv4Address(ip.get_attr("CTA_IP_V4_DST"))), pr.get_attr("CTA_PROTO_NUM"),
                pr.get_attr("CTA_PROTO_SRC_PORT") or 0, pr.get_attr("CTA_PROTO_DST_PORT") or 0)

    def counted(name):
        c = m.get_attr(name)
        return 0 if c is None else c.get_attr("CTA_COUNTERS_BYTES")

    (o_src, o_dst, proto, o_sport, o_dport), (_, r_dst, _, _, r_dport) = tup("CTA_TUPLE_ORIG"), tup("CTA_TUPLE_REPLY")
    ts = m.get_attr("CTA_TIMESTAMP")
    if kind == KIND_NEW:
        # The kernel puts times and counters only in DESTROY events; NEW takes the receive time (0 here).
        assert ts is None
        start_ms = 0
        return kind, (m.get_attr("CTA_ID"), 1, start_ms, None, proto, o_src, o_sport, r_dst, r_dport, o_dst, o_dport,
                      0, 0, 0)
    start_ms = ts.get_attr("CTA_TIMESTAMP_START") // 1_000_000
    return kind, (m.get_attr("CTA_ID"), 0, start_ms, ts.get_attr("CTA_TIMESTAMP_STOP") // 1_000_000, proto, o_src,
                  o_sport, r_dst, r_dport, o_dst, o_dport, counted("CTA_COUNTERS_ORIG"), counted("CTA_COUNTERS_REPLY"),
                  0)


@pytest.mark.netns
def test_parser_agrees_with_pyroute2_on_real_kernel_events():
    with scratch_namespace("skct") as ns:
        assert in_ns(ns, ["ip", "link", "set", "lo", "up"]).returncode == 0
        assert in_ns(ns, ["nft", "-f", "-"], input=RULES).returncode == 0
        done = in_ns(ns, [sys.executable, "-c", CAPTURE, str(REPO)], timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["drops"] == 0
    kinds = {KIND_NEW: 0, KIND_DESTROY: 0}
    translated = set()
    for raw in (bytes.fromhex(h) for h in out["datagrams"]):
        (start, end), = split_messages(raw)
        kind, row = parse_message(raw, start, end, now_ms=0, nat_only=False)
        assert (kind, row) == reference(raw)
        assert len(row) == len(STAGING_COLUMNS)
        kinds[kind] += 1
        dst_port, pub_port = row[STAGING_COLUMNS.index("dst_port")], row[STAGING_COLUMNS.index("pub_port")]
        if row[STAGING_COLUMNS.index("pub_ip")] == int(ipaddress.IPv4Address("127.0.0.5")):
            assert 40000 <= pub_port <= 40010 and dst_port == 7002
            translated.add("snat")
        if kind == KIND_DESTROY and dst_port == 7100:
            assert row[STAGING_COLUMNS.index("bytes_orig")] >= 5000  # accounting reached the parser
        # With nat_only the SNATed flow is kept and the others are skipped.
        _, nat_row = parse_message(raw, start, end, now_ms=0, nat_only=True)
        assert (nat_row is not None) == (row[STAGING_COLUMNS.index("pub_ip")] != row[STAGING_COLUMNS.index("src_ip")])
    # Four UDP flows and one TCP connection, each seen opening and closing.
    assert kinds == {KIND_NEW: 5, KIND_DESTROY: 5}
    assert translated == {"snat"}


# A socket buffer far too small for a burst: the kernel must fail to queue most DESTROY
# events, count them as drops, and deliver them again later (reliable delivery).
OVERFLOW = r"""
import json, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ledger.ctevents import ConntrackSubscription, parse_message, split_messages
reliable = sys.argv[2] == "1"
sub = ConntrackSubscription(4096, reliable=reliable)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 7001))
for i in range(300):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("127.0.0.1", 20000 + i))
    c.sendto(b"x", ("127.0.0.1", 7001)); c.close()
subprocess.run(["conntrack", "-F"], capture_output=True)
kinds, deadline, last = {"new": 0, "destroy": 0}, time.monotonic() + 15, time.monotonic()
# Redelivery retries about every 100 ms, so 2 s with nothing means nothing more will come.
while time.monotonic() < deadline and kinds["destroy"] < 300 and time.monotonic() - last < 2:
    try:
        got = sub.receive(1000)
    except OSError:
        got = []  # ENOBUFS without reliable delivery
    if got:
        last = time.monotonic()
    for d in got:
        for a, b in split_messages(d):
            kinds[parse_message(d, a, b, 0, nat_only=False)[0]] += 1
    time.sleep(0.05)
print(json.dumps({**kinds, "drops": sub.kernel_drops()}))
"""


@pytest.mark.netns
@pytest.mark.parametrize("reliable", [True, False])
def test_destroy_events_survive_a_full_buffer_only_with_reliable_delivery(reliable):
    with scratch_namespace("skct") as ns:
        assert in_ns(ns, ["ip", "link", "set", "lo", "up"]).returncode == 0
        assert in_ns(ns, ["nft", "-f", "-"], input=RULES).returncode == 0
        done = in_ns(ns, [sys.executable, "-c", OVERFLOW, str(REPO), "1" if reliable else "0"], timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["drops"] > 0 and out["new"] < 300  # the buffer really overflowed
    if reliable:
        assert out["destroy"] == 300
    else:
        assert out["destroy"] < 300  # the control: without it the kernel's drops are final


def nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    body = struct.pack("=HH", 4 + len(payload), kind | (0x8000 if nested else 0)) + payload
    return body + b"\0" * (-len(body) % 4)


def message(mtype: int, attrs: bytes, family: int = socket.AF_INET) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def ct_tuple(kind: int, src: str, dst: str, proto: int, sport: int | None, dport: int | None,
             icmp_id: int | None = None) -> bytes:
    ip = nla(1, socket.inet_aton(src)) + nla(2, socket.inet_aton(dst))
    pr = nla(1, bytes([proto]))
    if sport is not None:
        pr += nla(2, struct.pack(">H", sport)) + nla(3, struct.pack(">H", dport))
    if icmp_id is not None:
        pr += nla(4, struct.pack(">H", icmp_id))
    return nla(kind, nla(1, ip, True) + nla(2, pr, True), True)


NAT_TUPLES = (ct_tuple(1, "10.77.0.2", "203.0.113.9", 6, 50000, 443)
              + ct_tuple(2, "203.0.113.9", "203.0.113.1", 6, 443, 30001))
REPLY = ct_tuple(2, "203.0.113.9", "203.0.113.1", 6, 443, 30001)


def test_destroy_with_32_bit_counters_and_no_timestamps_uses_now():
    counters = nla(9, nla(4, struct.pack(">I", 1234)), True) + nla(10, nla(2, struct.pack(">Q", 1 << 40)), True)
    raw = message((1 << 8) | 2, NAT_TUPLES + counters + nla(12, struct.pack(">I", 77)))
    kind, row = parse_message(raw, 0, len(raw), now_ms=5000)
    assert kind == KIND_DESTROY
    assert row == (77, 0, 5000, 5000, 6, int(ipaddress.IPv4Address("10.77.0.2")), 50000,
                   int(ipaddress.IPv4Address("203.0.113.1")), 30001, int(ipaddress.IPv4Address("203.0.113.9")), 443,
                   1234, 1 << 40, 0)


def test_icmp_uses_the_echo_id_as_both_ports():
    tuples = (ct_tuple(1, "10.77.0.2", "203.0.113.9", 1, None, None, icmp_id=9)
              + ct_tuple(2, "203.0.113.9", "203.0.113.1", 1, None, None, icmp_id=31))
    raw = message(1 << 8, tuples)
    kind, row = parse_message(raw, 0, len(raw), now_ms=1)
    # The id names the mapping both ways, so the translated id is the "public port".
    assert kind == KIND_NEW and row[STAGING_COLUMNS.index("src_port")] == 9
    assert row[STAGING_COLUMNS.index("dst_port")] == 9
    assert row[STAGING_COLUMNS.index("pub_port")] == 31 and row[STAGING_COLUMNS.index("end_ms")] is None


def test_untranslated_ipv6_and_foreign_messages_are_not_rows():
    same = ct_tuple(1, "10.77.0.2", "10.77.0.1", 17, 5353, 53) + ct_tuple(2, "10.77.0.1", "10.77.0.2", 17, 53, 5353)
    raw = message((1 << 8) | 2, same)
    assert parse_message(raw, 0, len(raw), 0) == (KIND_DESTROY, None)
    assert parse_message(raw, 0, len(raw), 0, nat_only=False)[1] is not None
    v6 = message((1 << 8) | 2, b"", family=socket.AF_INET6)
    assert parse_message(v6, 0, len(v6), 0) == (KIND_OTHER, None)
    other = message(3 << 8, NAT_TUPLES)  # another nfnetlink subsystem
    assert parse_message(other, 0, len(other), 0) == (KIND_OTHER, None)
    no_tuples = message((1 << 8) | 2, nla(12, struct.pack(">I", 1)))
    assert parse_message(no_tuples, 0, len(no_tuples), 0) == (KIND_DESTROY, None)


@pytest.mark.parametrize("cut", [3, 12, 19, 30, -6])
def test_truncated_messages_raise_a_clear_error(cut):
    raw = message((1 << 8) | 2, NAT_TUPLES)
    broken = raw[:cut]
    with pytest.raises(MalformedMessage, match="byte"):
        if len(broken) >= 16:
            # The header still claims the full length: split_messages must notice.
            split_messages(broken)
        parse_message(broken, 0, len(broken), 0)


def test_attribute_longer_than_its_parent_is_rejected():
    raw = bytearray(message((1 << 8) | 2, NAT_TUPLES))
    struct.pack_into("=H", raw, 20, 4000)  # the first attribute's nla_len
    with pytest.raises(MalformedMessage, match="claims 4000 bytes"):
        parse_message(bytes(raw), 0, len(raw), 0)


def test_short_integer_attribute_is_rejected():
    short_src = nla(1, nla(1, b"\x0a\x4d") + nla(2, socket.inet_aton("203.0.113.9")), True)  # 2-byte IPv4
    tuples = nla(1, short_src + nla(2, nla(1, b"\x06"), True), True) + REPLY
    raw = message((1 << 8) | 2, tuples)
    with pytest.raises(MalformedMessage, match="needs 4"):
        parse_message(raw, 0, len(raw), 0)


def test_two_messages_in_one_datagram_are_split():
    a = message((1 << 8), NAT_TUPLES)
    b = message((1 << 8) | 2, NAT_TUPLES)
    assert split_messages(a + b) == [(0, len(a)), (len(a), len(a) + len(b))]


def test_netlink_drops_are_read_by_inode(tmp_path):
    proc = tmp_path / "netlink"
    proc.write_text("sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n"
                    "00000000fe6c167e 12  4242       00000005 0        0        0     2        17       991\n"
                    "00000000f65f63c3 4   0          00000000 0        0        0     2        0        476\n")
    assert read_netlink_drops(991, proc) == 17
    assert read_netlink_drops(476, proc) == 0
    assert read_netlink_drops(5, proc) is None
    assert read_netlink_drops(991, tmp_path / "missing") is None


def test_logger_counts_a_malformed_datagram_and_keeps_the_good_ones(tmp_path, capsys):
    from ledger.db import open_ledger
    from ledger.flowlog import FlowLogger
    led = open_ledger(tmp_path / "ledger.sqlite", "skl-box")
    lg = FlowLogger(led, tmp_path, alert_percent=90)
    good = message((1 << 8) | 2, NAT_TUPLES + nla(12, struct.pack(">I", 5)))
    for d in (good, good[:40], message(1 << 8, NAT_TUPLES), b"\x00" * 9, b""):
        lg.handle(d, now_ms=1000)
    assert (lg.stats.destroy, lg.stats.new, lg.stats.malformed) == (1, 1, 2)
    assert "malformed netlink message" in capsys.readouterr().err
    # A write that fails keeps the events in memory for the next flush instead of dropping them.
    led.db.conn.execute("CREATE TRIGGER no_staging BEFORE INSERT ON flow_staging "
                        "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    lg.flush()
    assert lg.stats.write_errors == 1 and len(lg.pending) == 2 and "keeping 2 events" in capsys.readouterr().err
    led.db.conn.execute("DROP TRIGGER no_staging")
    lg.flush()
    assert lg.stats.stored == 2 and lg.pending == []
    assert led.db.conn.execute("SELECT COUNT(*) FROM flow_staging").fetchone()[0] == 2
    led.close()


# Runs inside the scratch namespace: TCP connections held open and UDP flows (one SNATed),
# then our table dump next to `conntrack -L`, the reference.
DUMP = r"""
import json, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ledger.ctevents import dump_conntrack
for k in ("nf_conntrack_acct", "nf_conntrack_timestamp"):
    open(f"/proc/sys/net/netfilter/{k}", "w").write("1")
srv = socket.socket(); srv.bind(("127.0.0.1", 7100)); srv.listen(64)
held = []
for i in range(40):
    c = socket.create_connection(("127.0.0.1", 7100)); a, _ = srv.accept(); held += [c, a]
for port in (7000, 7001, 7002, 7003):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.sendto(b"x", ("127.0.0.1", port)); c.close()
rows, counts = dump_conntrack(0, nat_only=False)
nat_rows, _ = dump_conntrack(0, nat_only=True)
ref = subprocess.run(["conntrack", "-L", "-f", "ipv4", "-o", "id"], capture_output=True, text=True).stdout
print(json.dumps({"rows": rows, "nat_rows": nat_rows, "counts": counts, "ref": ref}))
"""


@pytest.mark.netns
def test_table_dump_matches_conntrack_list():
    with scratch_namespace("skct") as ns:
        assert in_ns(ns, ["ip", "link", "set", "lo", "up"]).returncode == 0
        assert in_ns(ns, ["nft", "-f", "-"], input=RULES).returncode == 0
        done = in_ns(ns, [sys.executable, "-c", DUMP, str(REPO)], timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    ref_ids = sorted(int(w[3:]) for line in out["ref"].splitlines() for w in line.split() if w.startswith("id="))
    # 40 TCP connections (one entry each) and four UDP flows; every listed entry, nothing else.
    assert len(ref_ids) >= 44 and out["counts"]["entries"] == len(ref_ids)
    assert sorted(r[0] for r in out["rows"]) == ref_ids
    col = STAGING_COLUMNS.index
    for r in out["rows"]:
        assert r[col("open")] == 1 and r[col("end_ms")] is None
        assert r[col("start_ms")] > 1_600_000_000_000  # the kernel's start timestamp, not the 0 we passed
    tcp = [r for r in out["rows"] if r[col("proto")] == 6]
    assert len(tcp) == 40 and {r[col("dst_port")] for r in tcp} == {7100}
    # Only the SNATed flow is a translation.
    (nat,) = out["nat_rows"]
    assert nat[col("pub_ip")] == int(ipaddress.IPv4Address("127.0.0.5")) and 40000 <= nat[col("pub_port")] <= 40010


def test_dump_request_is_a_ctnetlink_get_dump():
    raw = dump_request(7)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert (length, mtype, flags, seq, pid) == (len(raw), (1 << 8) | 1, 0x301, 7, 0)
    assert struct.unpack_from("=BBH", raw, 16) == (socket.AF_INET, 0, 0)


def ct_tuple6(kind: int, src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    ip = nla(3, socket.inet_pton(socket.AF_INET6, src)) + nla(4, socket.inet_pton(socket.AF_INET6, dst))
    pr = nla(1, bytes([proto])) + nla(2, struct.pack(">H", sport)) + nla(3, struct.pack(">H", dport))
    return nla(kind, nla(1, ip, True) + nla(2, pr, True), True)


def test_ipv6_flows_are_rows_with_16_byte_addresses_only_when_asked():
    tuples = (ct_tuple6(1, "2001:db8:1::2", "2001:db8:2::2", 6, 50000, 443)
              + ct_tuple6(2, "2001:db8:2::2", "2001:db8:1::2", 6, 443, 50000))
    raw = message(1 << 8, tuples + nla(12, struct.pack(">I", 9)), family=socket.AF_INET6)
    assert parse_message(raw, 0, len(raw), 5) == (KIND_OTHER, None)  # IPv4-only unless asked
    kind, row = parse_message(raw, 0, len(raw), 5, nat_only=True, ipv6=True)  # not translated, still kept
    col = STAGING_COLUMNS.index
    assert kind == KIND_NEW and row[col("ct_id")] == 9
    assert row[col("src_ip")] == row[col("pub_ip")] == socket.inet_pton(socket.AF_INET6, "2001:db8:1::2")
    assert (row[col("src_port")], row[col("pub_port")], row[col("dst_port")]) == (50000, 50000, 443)
    # Link-local and multicast sources are the box's neighbours talking, not visitors' traffic.
    for src in ("fe80::1", "ff02::1", "::1"):
        t = ct_tuple6(1, src, "2001:db8:2::2", 17, 546, 547) + ct_tuple6(2, "2001:db8:2::2", src, 17, 547, 546)
        raw = message((1 << 8) | 2, t, family=socket.AF_INET6)
        assert parse_message(raw, 0, len(raw), 5, ipv6=True) == (KIND_DESTROY, None)
    short = nla(1, nla(1, nla(3, b"\x20\x01") + nla(4, bytes(16)), True) + nla(2, nla(1, b"\x06"), True), True)
    raw = message(1 << 8, short + tuples[len(ct_tuple6(1, "::2", "::3", 6, 1, 1)):], family=socket.AF_INET6)
    with pytest.raises(MalformedMessage, match="needs 16"):
        parse_message(raw, 0, len(raw), 5, ipv6=True)
