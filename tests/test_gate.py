"""The gate process and the session lifecycle against the real kernel: the socket protocol, the
index rebuilt after a crash, a crash injected at every step of a login and of an end (ledger ==
kernel after the restart), and the sweeper writing the logouts of sessions the kernel ended."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from base.faults import FAULT_EXIT
from netcfg.gate import GateError, GateUnavailable
from gate_util import GateBox, started_gate_box

pytestmark = pytest.mark.netns
MAC, IP = "02:00:00:00:aa:01", "10.99.0.61"


@pytest.fixture
def box(tmp_path):
    with started_gate_box(tmp_path) as b:
        yield b


@pytest.fixture
def logged_in_box(tmp_path):
    """A gate with a 30 s idle limit and one device (MAC, IP) logged in."""
    with started_gate_box(tmp_path, idle_seconds=30) as b:
        assert b.session("login", MAC, IP).returncode == 0
        yield b


@pytest.fixture
def quiet_box(tmp_path):
    """A gate whose sweeper does not run during the test (it would remove devices let in
    without a login, as the protocol tests do)."""
    with started_gate_box(tmp_path, sweep_seconds=300) as b:
        yield b


def wait_for(condition, what: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logouts(box: GateBox) -> list[tuple]:
    return box.rows("SELECT login_id, reason FROM logouts ORDER BY id")


def one_logout_per_login(box: GateBox) -> None:
    counts = box.rows("SELECT login_id, COUNT(*) FROM logouts GROUP BY login_id HAVING COUNT(*) > 1")
    assert counts == [], f"logins with more than one logout row: {counts}"


# -- the socket protocol -------------------------------------------------------------------

def test_the_gate_serves_the_gate_protocol_from_its_index(quiet_box):
    box = quiet_box
    gate = box.client()
    gate.authorise(MAC.upper(), IP, 600)  # any MAC spelling
    assert box.kernel() == {(MAC, IP)}
    [auth] = gate.authorised()
    assert (auth.mac, auth.ip, auth.timeout) == (MAC, IP, 600) and 590 <= auth.expires <= 600
    assert gate.authorised(ip=IP) == [auth] and gate.authorised(mac=MAC) == [auth]
    assert gate.authorised(ip="10.99.0.62") == []
    gate.authorise(MAC, "10.99.0.62", 300)  # a new address replaces the old one in one transaction
    assert box.kernel() == {(MAC, "10.99.0.62")}
    assert gate.revoke(MAC) == ["10.99.0.62"] and box.kernel() == set() and gate.authorised() == []
    assert gate.revoke(MAC) == []
    health = gate.health()
    assert health["ok"] and health["devices"] == 0 and health["changes"] == 4


def test_bad_requests_get_one_line_errors_and_the_gate_keeps_serving(quiet_box):
    box = quiet_box
    gate = box.client()
    for call, words in [(lambda: gate.authorise("not-a-mac", IP, 60), "not a MAC"),
                        (lambda: gate.authorise(MAC, "10.99.0.300", 60), "not an IPv4"),
                        (lambda: gate.authorise(MAC, IP, 0), "seconds must be"),
                        (lambda: gate.authorise(MAC, IP, 10**9), "seconds must be")]:
        with pytest.raises(GateError, match=words):
            call()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(box.socket))
        f = s.makefile("rwb")
        for raw, words in [(b"{not json\n", "not JSON"), (b"[1]\n", "JSON object"), (b'{"op": "format"}\n', "unknown op"),
                           (b"x" * 70000 + b"\n", "longer than")]:
            f.write(raw)
            f.flush()
            answer = json.loads(f.readline())
            assert not answer["ok"] and words in answer["error"]
    assert box.kernel() == set()
    gate.authorise(MAC, IP, 60)
    assert box.kernel() == {(MAC, IP)}


def test_the_socket_has_the_configured_mode_and_a_second_gate_refuses_to_start(box):
    assert stat.S_IMODE(os.stat(box.socket).st_mode) == 0o660
    second = subprocess.run(["ip", "netns", "exec", box.ns, sys.executable, "-m", "skillspot.cli", "--config",
                             str(box.config), "gate"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "another gate is already serving" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1


def test_without_the_gate_the_cli_says_so_in_one_line_and_changes_nothing(box):
    box.kill()
    with pytest.raises(GateUnavailable, match=str(box.socket)):
        box.client().authorise(MAC, IP, 60)
    out = subprocess.run([sys.executable, "-m", "skillspot.cli", "--config", str(box.config), "nft", "list"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and str(box.socket) in out.stderr and len(out.stderr.strip().splitlines()) == 1
    failed = box.session("login", MAC, IP)
    assert failed.returncode != 0 and "GateUnavailable" in failed.stderr
    assert box.kernel() == set() and box.ledger_live() == set()
    assert logouts(box) == [(1, "gate_error")]  # the intent row is closed: nothing half-written


def test_the_index_is_rebuilt_from_the_kernel_after_a_crash(box):
    assert box.session("login", MAC, IP).returncode == 0
    box.kill()
    box.start()
    [auth] = box.client().authorised()
    assert (auth.mac, auth.ip) == (MAC, IP) and 580 <= auth.expires <= 600
    assert box.ledger_live() == {(MAC, IP)} and logouts(box) == []


# -- a crash at every step -------------------------------------------------------------------

LOGIN_FAULTS = [  # (fault point, which process dies, online after recovery, reason of the logout if any)
    ("login.locked", "client", False, None),
    ("login.after_intent", "client", False, "not_admitted"),
    ("login.after_gate", "client", True, None),
    ("login.after_confirm", "client", True, None),
    ("gate.after_kernel", "gate", False, "gate_error"),
]


@pytest.mark.parametrize("point,who,online,reason", LOGIN_FAULTS)
def test_a_crash_at_any_step_of_a_login_leaves_ledger_and_kernel_agreeing(box, point, who, online, reason):
    if who == "gate":
        box.kill()
        box.start(fault=point)
    done = box.session("login", MAC, IP, fault=point if who == "client" else None)
    if who == "client":
        assert done.returncode == FAULT_EXIT, done.stderr
    else:
        assert done.returncode != 0 and "GateUnavailable" in done.stderr
        assert box.kill() == FAULT_EXIT
    box.kill()  # everything restarts, as after a power cut
    box.start()
    expected = {(MAC, IP)} if online else set()
    wait_for(lambda: box.kernel() == box.ledger_live() == expected,
             f"kernel {box.kernel()} == ledger {box.ledger_live()} == {expected}")
    assert [r for _, r in logouts(box)] == ([reason] if reason else [])
    one_logout_per_login(box)


END_FAULTS = ["end.after_intent", "end.after_gate", "gate.after_kernel"]


@pytest.mark.parametrize("point", END_FAULTS)
def test_a_crash_at_any_step_of_an_admin_revoke_still_ends_the_session_with_its_reason(box, point):
    assert box.session("login", MAC, IP).returncode == 0
    assert box.kernel() == {(MAC, IP)}
    if point.startswith("gate."):
        box.kill()
        box.start(fault=point)
    done = box.session("admin_revoke", MAC, fault=None if point.startswith("gate.") else point)
    assert done.returncode != 0
    box.kill()
    box.start()
    wait_for(lambda: box.kernel() == box.ledger_live() == set(),
             f"kernel {box.kernel()} and ledger {box.ledger_live()} empty")
    assert [r for _, r in logouts(box)] == ["admin_revoke"]
    one_logout_per_login(box)


def test_a_kernel_element_without_a_login_and_a_login_without_an_element_are_reconciled(box):
    assert box.session("login", MAC, IP).returncode == 0
    box.kill()
    # While the gate is down, the kernel loses the device (a reboot) and gains one nobody logged in.
    box.nft("flush", "set", "inet", "skillspot", "authorised")
    box.nft("add", "element", "inet", "skillspot", "authorised", "{ 02:00:00:00:bb:02 . 10.99.0.99 timeout 600s }")
    box.start()
    wait_for(lambda: box.kernel() == box.ledger_live() == set(), "both sides empty")
    assert [r for _, r in logouts(box)] == ["kernel_lost"]
    assert box.rows("SELECT subject FROM events WHERE kind = 'reconcile_removed'") == [("02:00:00:00:bb:02",)]


# -- sessions the kernel ends ---------------------------------------------------------------------

def test_the_sweeper_writes_one_logout_for_a_session_the_kernel_timed_out(box):
    led = box.ledger()
    from ledger.records import Login
    from sessions import build_sessions
    from base.config import load_config
    sessions = build_sessions(load_config(box.config), led)
    sessions.admit(Login(method="line", line_user_id="U1", display_name="Short", friend=None, friendship_changed=None,
                         consent_version="2026-11", mac=MAC, ip=IP, expires_ms=int((time.time() + 2) * 1000)), 2)
    ended = time.monotonic()
    wait_for(lambda: logouts(box) == [(1, "session_timeout")], "a session_timeout logout", timeout=20)
    # Written within sweep_seconds (1 s here) of the kernel's expiry, plus one pass.
    assert time.monotonic() - ended < 2 + 1 + 3
    assert box.kernel() == set() and box.client().authorised() == []
    led.close()


def test_the_sweeper_ends_an_idle_device(logged_in_box):
    box = logged_in_box
    # The device goes quiet: its idle element runs out (removed here as 30 s of silence would).
    box.nft("delete", "element", "inet", "skillspot", "active", f"{{ {MAC} . {IP} }}")
    wait_for(lambda: logouts(box) == [(1, "idle")], "an idle logout")
    assert box.kernel() == set() and box.ledger_live() == set()


def test_ipv6_traffic_alone_keeps_a_device_from_the_idle_end(logged_in_box):
    box = logged_in_box
    # The device stops using IPv4 but keeps talking IPv6: its IPv4 idle element runs out
    # (removed here) while the IPv6 rule refreshed its MAC's (added here, as a packet would).
    box.nft("add", "element", "inet", "skillspot", "active_mac6", f"{{ {MAC} }}")
    box.nft("delete", "element", "inet", "skillspot", "active", f"{{ {MAC} . {IP} }}")
    changed = time.time()
    gate = box.client()
    # Two idle-set reads that started after the change: the device must still be online.
    wait_for(lambda: (gate.health()["last_idle_read_s_ago"] or 1e9) < time.time() - changed - 0.2,
             "a read of the idle sets after the change")
    first = time.time() - gate.health()["last_idle_read_s_ago"]
    wait_for(lambda: time.time() - gate.health()["last_idle_read_s_ago"] > first + 0.2, "a second read")
    assert logouts(box) == [] and box.kernel() == {(MAC, IP)}
    # Quiet on IPv6 too: now it is idle.
    box.nft("delete", "element", "inet", "skillspot", "active_mac6", f"{{ {MAC} }}")
    wait_for(lambda: logouts(box) == [(1, "idle")], "an idle logout")
    assert box.kernel() == set()


def test_a_revoke_through_the_gate_deletes_the_devices_connections_and_no_others(quiet_box):
    box = quiet_box
    def connection(src: str, sport: int) -> None:
        subprocess.run(["ip", "netns", "exec", box.ns, "conntrack", "-I", "-s", src, "-d", "198.51.100.7",
                        "-p", "tcp", "--sport", str(sport), "--dport", "443", "--state", "ESTABLISHED",
                        "-t", "300", "-u", "ASSURED"], check=True, capture_output=True)
    for sport in (40001, 40002):
        connection(IP, sport)
    connection("10.99.0.99", 40001)
    gate = box.client()
    gate.authorise(MAC, IP, 600)
    assert gate.revoke(MAC) == [IP]
    left = subprocess.run(["ip", "netns", "exec", box.ns, "conntrack", "-L"], capture_output=True, text=True).stdout
    assert f"src={IP} " not in left and "src=10.99.0.99 " in left


def test_a_new_login_of_the_same_device_ends_its_older_login(box):
    assert box.session("login", MAC, IP).returncode == 0
    assert box.session("login", MAC, "10.99.0.70").returncode == 0
    assert logouts(box) == [(1, "relogin")]
    assert box.kernel() == box.ledger_live() == {(MAC, "10.99.0.70")}


def test_a_client_keeps_asking_across_a_gate_restart(box):
    """Questions go over a kept connection; after the gate restarts that connection is dead, and
    the client replaces it once instead of failing the next page load."""
    client = box.client()
    assert client.health()["devices"] == 0
    box.kill()
    box.start()
    assert client.health()["devices"] == 0  # over a new connection: the kept one died with the gate
    box.kill()
    with pytest.raises(GateUnavailable):
        client.health()
