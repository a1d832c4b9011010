"""netcfg.setdump reads a set's keys over netlink exactly as nft lists them: a real kernel in a
namespace of this run, elements put in with nft itself, enough of them for a many-part dump."""
from __future__ import annotations

import json
import sys

import pytest

from netns_util import in_ns, scratch_namespace

pytestmark = pytest.mark.netns

TABLE = """table inet sdtest {
    set pairs { type ether_addr . ipv4_addr; size 65536; flags timeout; }
    set macs { type ether_addr; size 65536; }
    set empty { type ether_addr . ipv4_addr; }
}
"""
READ = """
import json, sys
from netcfg.setdump import SetDumpError, mac_ipv4_of, set_keys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted(mac_ipv4_of(k) if name != "macs" else k.hex() for k in set_keys("sdtest", name))
    except SetDumpError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""
N = 20_000  # far more than one netlink message holds


def test_the_netlink_dump_matches_what_nft_lists():
    with scratch_namespace() as ns:
        assert in_ns(ns, ["nft", "-f", "-"], input=TABLE).returncode == 0
        pairs = [(f"02:5d:00:00:{i >> 8:02x}:{i & 255:02x}", f"10.77.{i >> 8}.{i & 255}") for i in range(N)]
        batch = ("add element inet sdtest pairs { "
                 + ", ".join(f"{m} . {ip} timeout 600s" for m, ip in pairs) + " }\n"
                 "add element inet sdtest macs { " + ", ".join(m for m, _ in pairs[:300]) + " }\n")
        assert in_ns(ns, ["nft", "-f", "-"], input=batch).returncode == 0
        got = in_ns(ns, [sys.executable, "-c", READ, "pairs", "macs", "empty", "missing"], timeout=120)
        assert got.returncode == 0, got.stderr
        answer = json.loads(got.stdout)
        listed = json.loads(in_ns(ns, ["nft", "-j", "list", "set", "inet", "sdtest", "pairs"]).stdout)
        from_nft = sorted({tuple(e["elem"]["val"]["concat"]) for item in listed["nftables"] if "set" in item
                           for e in item["set"]["elem"]})
        assert len(from_nft) == N
        assert [tuple(k) for k in answer["pairs"]] == from_nft
        assert answer["macs"] == sorted(m.replace(":", "") for m, _ in pairs[:300])
        assert answer["empty"] == []
        assert "no such table or set" in answer["missing"]


def test_packing_round_trips():
    from netcfg.setdump import mac_ipv4_key, mac_ipv4_of
    key = mac_ipv4_key("02:AB:cd:00:00:01", "192.0.2.7")
    assert len(key) == 12 and mac_ipv4_of(key) == ("02:ab:cd:00:00:01", "192.0.2.7")
    with pytest.raises(OSError):
        mac_ipv4_key("02:ab:cd:00:00:01", "192.0.2.300")


def test_the_timed_read_gives_each_elements_timeout_and_time_left():
    with scratch_namespace() as ns:
        assert in_ns(ns, ["nft", "-f", "-"], input=TABLE).returncode == 0
        assert in_ns(ns, ["nft", "-f", "-"], input=(
            "add element inet sdtest pairs { 02:5d:00:00:00:01 . 10.77.0.1 timeout 600s, "
            "02:5d:00:00:00:02 . 10.77.0.2 timeout 90s }\n")).returncode == 0
        got = in_ns(ns, [sys.executable, "-c",
                         "import json\nfrom netcfg.setdump import mac_ipv4_of, timed_elements\n"
                         "print(json.dumps({' '.join(mac_ipv4_of(k)): v "
                         "for k, v in timed_elements('sdtest', 'pairs').items()}))"])
        assert got.returncode == 0, got.stderr
        answer = json.loads(got.stdout)
        assert answer.keys() == {"02:5d:00:00:00:01 10.77.0.1", "02:5d:00:00:00:02 10.77.0.2"}
        timeout, left = answer["02:5d:00:00:00:01 10.77.0.1"]
        assert timeout == 600_000 and 590_000 <= left <= 600_000
        timeout, left = answer["02:5d:00:00:00:02 10.77.0.2"]
        assert timeout == 90_000 and 80_000 <= left <= 90_000
