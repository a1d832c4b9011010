"""The idle set read in a child process (netcfg/idlescan.py) answers exactly what the read in
process answers: the real ruleset loaded by the real gate, elements put in with nft itself."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from gate_util import started_gate_box

pytestmark = pytest.mark.netns

BUSY, IDLE = ("02:00:00:00:cc:01", "10.99.0.11"), ("02:00:00:00:cc:02", "10.99.0.12")
BUSY6 = ("02:00:00:00:cc:03", "10.99.0.13")  # only its IPv6 traffic refreshed anything
PROBE = """
import json, sys
from netcfg.idlescan import idle_among
from netcfg.nft import NftSets
keys = [tuple(k) for k in json.loads(sys.argv[1])]
reader = NftSets()
print(json.dumps({"in_process": sorted(idle_among(keys, reader.active_keys, child_above=len(keys))),
                  "child": sorted(idle_among(keys, reader.active_keys, child_above=0))}))
"""


@pytest.fixture
def box(tmp_path):
    with started_gate_box(tmp_path, sweep_seconds=300) as b:
        yield b


def test_the_child_process_finds_the_same_idle_devices_as_the_gate_would(box):
    for mac, ip in (BUSY, IDLE, BUSY6):
        box.nft("add", "element", "inet", "skillspot", "authorised", f"{{ {mac} . {ip} timeout 600s }}")
    box.nft("add", "element", "inet", "skillspot", "active", f"{{ {BUSY[0]} . {BUSY[1]} }}")
    box.nft("add", "element", "inet", "skillspot", "active_mac6", f"{{ {BUSY6[0]} }}")
    got = subprocess.run(["ip", "netns", "exec", box.ns, sys.executable, "-c", PROBE,
                          json.dumps([BUSY, IDLE, BUSY6])],
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    answer = json.loads(got.stdout)
    assert answer["child"] == answer["in_process"] == [list(IDLE)]


def test_without_the_table_the_child_says_so():
    ns = f"skg-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        got = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                              "from netcfg.idlescan import idle_among\n"
                              "idle_among([('02:00:00:00:cc:01', '10.0.0.1')], set, child_above=0)"],
                             capture_output=True, text=True, timeout=60)
        assert got.returncode != 0 and "IdleScanError" in got.stderr and "idle scan:" in got.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_device_left_out_of_one_dump_is_not_idle():
    """A dump during a resize of the kernel's hash set can leave out an active device; it counts
    as idle only if the second read leaves it out too."""
    from netcfg.idlescan import missing_twice
    dumps = iter([{BUSY}, {BUSY, IDLE}])  # the first read leaves out IDLE, the second holds it
    assert missing_twice([BUSY, IDLE], lambda: next(dumps)) == set()
    reads = []
    assert missing_twice([BUSY, IDLE], lambda: reads.append(1) or {BUSY}) == {IDLE} and len(reads) == 2
    reads.clear()
    assert missing_twice([BUSY], lambda: reads.append(1) or {BUSY}) == set() and len(reads) == 1
