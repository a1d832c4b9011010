"""The dnsmasq lease hook as a small client of the gate: the gate records the lease and lets a
returning device in again; with the gate down the hook takes the full path and loses nothing.
Real gate, real ledger, the rendered hook script, in a namespace of this run."""
from __future__ import annotations

import os
import subprocess

import pytest

from base.config import load_config
from gate_util import started_gate_box
from provisioning.dnsmasq import write_dnsmasq

pytestmark = pytest.mark.netns
MAC, IP, NEW_IP = "02:5e:00:00:00:07", "10.99.0.77", "10.99.0.78"


def run_hook(hook, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "DNSMASQ_LEASE_EXPIRES": "1800000000"}
    return subprocess.run([str(hook), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def box(tmp_path):
    with started_gate_box(tmp_path) as b:
        yield b


def test_the_gate_records_the_lease_and_lets_a_returning_device_in(box, tmp_path):
    files = write_dnsmasq(load_config(box.config), box.config, tmp_path / "etc")
    assert "provisioning/leasehook.py" in files.lease_hook.read_text()
    assert box.session("login", MAC, IP).returncode == 0  # a LINE login...
    assert box.session("idle", MAC).returncode == 0        # ...whose session ended (not a revoke)
    assert box.client().authorised(mac=MAC) == []
    got = run_hook(files.lease_hook, "add", MAC, NEW_IP, "phone")  # it comes back with a new lease
    assert got.returncode == 0, got.stderr
    assert "the long way" not in got.stderr and f"returning device {MAC} at {NEW_IP} let in again" in got.stderr
    assert [a.ip for a in box.client().authorised(mac=MAC)] == [NEW_IP]
    leases = box.rows(f"SELECT event, mac, ip, hostname FROM leases WHERE mac = '{MAC}'")
    assert leases == [("add", MAC, NEW_IP, "phone")]
    # A renewal of the same lease is recorded, and is not a new session.
    again = run_hook(files.lease_hook, "old", MAC, NEW_IP, "phone")
    assert again.returncode == 0 and "let in again" not in again.stderr, again.stderr
    assert box.rows(f"SELECT count(*) FROM logins WHERE mac = '{MAC}'") == [(2,)]


def test_with_the_gate_down_the_hook_records_the_long_way(box, tmp_path):
    files = write_dnsmasq(load_config(box.config), box.config, tmp_path / "etc")
    box.kill()
    got = run_hook(files.lease_hook, "add", MAC, IP, "phone")
    assert got.returncode == 0, got.stderr
    assert "recording it the long way" in got.stderr
    assert box.rows(f"SELECT event, ip FROM leases WHERE mac = '{MAC}'") == [("add", IP)]


def test_a_malformed_event_is_refused_by_the_gate_and_then_clearly(box, tmp_path):
    files = write_dnsmasq(load_config(box.config), box.config, tmp_path / "etc")
    got = run_hook(files.lease_hook, "add", "zz", IP)
    assert got.returncode != 0 and "lease event ignored: not a MAC address" in got.stderr
    assert box.rows("SELECT count(*) FROM leases") == [(0,)]
