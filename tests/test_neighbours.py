"""The neighbour lookup the gate uses, against the kernel's own table in a scratch namespace."""
from __future__ import annotations

import sys
import textwrap

import pytest

from netcfg.neighbours import _arp_lookup
from netns_util import in_ns, scratch_namespace


def test_the_arp_table_is_parsed_and_incomplete_entries_are_skipped(tmp_path):
    table = tmp_path / "arp"
    table.write_text("IP address       HW type     Flags       HW address            Mask     Device\n"
                     "10.99.0.50       0x1         0x2         02:AA:00:00:00:50     *        lan0\n"
                     "10.99.0.51       0x1         0x0         00:00:00:00:00:00     *        lan0\n"
                     "10.99.0.5        0x1         0x2         02:aa:00:00:00:05     *        lan0\n")
    assert _arp_lookup("10.99.0.50", str(table)) == "02:aa:00:00:00:50"
    assert _arp_lookup("10.99.0.5", str(table)) == "02:aa:00:00:00:05"  # not a prefix match of .50
    assert _arp_lookup("10.99.0.51", str(table)) is None  # incomplete: no address yet
    assert _arp_lookup("10.99.0.52", str(table)) is None


@pytest.mark.netns
def test_the_lookup_agrees_with_the_kernel_and_pyroute2():
    with scratch_namespace() as ns:
        for argv in (["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
                     ["ip", "link", "set", "lan0", "up"], ["ip", "addr", "add", "10.99.0.1/24", "dev", "lan0"],
                     ["ip", "neigh", "add", "10.99.0.60", "lladdr", "02:bb:00:00:00:60", "dev", "lan0", "nud", "reachable"],
                     ["ip", "neigh", "add", "10.99.0.61", "lladdr", "02:bb:00:00:00:61", "dev", "lan0", "nud", "stale"]):
            assert in_ns(ns, argv).returncode == 0, argv
        code = textwrap.dedent("""
            import json, socket
            from pyroute2 import IPRoute
            from netcfg.neighbours import mac_for_ip
            def ref(ip):
                with IPRoute() as ipr:
                    for m in ipr.get_neighbours(family=socket.AF_INET, dst=ip):
                        if m.get_attr("NDA_LLADDR") and not m["state"] & 0x21:
                            return m.get_attr("NDA_LLADDR").lower()
            ips = ["10.99.0.60", "10.99.0.61", "10.99.0.62"]
            print(json.dumps([[mac_for_ip(ip), ref(ip)] for ip in ips]))
        """)
        got = in_ns(ns, [sys.executable, "-c", code])
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == ('[["02:bb:00:00:00:60", "02:bb:00:00:00:60"], '
                                      '["02:bb:00:00:00:61", "02:bb:00:00:00:61"], [null, null]]')
