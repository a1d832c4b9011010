"""The RADIUS server against real peers on loopback: FreeRADIUS's radclient for MAC
authorisation and accounting, raw datagrams for everything that must be dropped."""
from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pyrad import packet as rp

from ledger import accounting as acc
from ledger.db import open_ledger
from radius.attributes import load_dictionary
from radius.hostapd_shapes import accounting_request, mac_acl_request, radclient_text
from radius.server import RadiusServer
from base.config import RadiusConfig

SECRET = "testing-secret-123"
NAS_ID = "skr-ap1"
BSSID = "02:5a:00:00:00:01"
SSID = "DSD Free WiFi"
PHONE = "3a:11:22:33:44:55"
BLOCKED = "02:00:00:00:00:66"
RADCLIENT = shutil.which("radclient")
needs_radclient = pytest.mark.skipif(RADCLIENT is None, reason="radclient (Debian freeradius-utils) not installed")


def free_udp_ports(n: int) -> list[int]:
    """n distinct loopback UDP ports that were free a moment ago (the kernel picks them)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Running:
    """A RadiusServer on loopback in a thread, with its own ledger."""

    def __init__(self, tmp_path: Path, **overrides) -> None:
        auth, acct = free_udp_ports(2)
        self.cfg = RadiusConfig(**{
            "auth_port": auth, "acct_port": acct, "clients": [{"address": "127.0.0.1", "secret": SECRET}],
            "block_list": [BLOCKED], "session_timeout_seconds": 7200,
            "interim_interval_seconds": 120, **overrides})
        self.ledger_path = tmp_path / "ledger.sqlite"
        self.ledger = open_ledger(self.ledger_path, "skr-box")
        self.server = RadiusServer(self.cfg, self.ledger, idle_seconds=600)  # portal.idle_seconds
        self.server.bind()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_seconds": 0.05}, daemon=True)
        self.thread.start()
        assert self.server.ready.wait(10)

    def reader(self):
        """A second connection, as another process would read the ledger."""
        return open_ledger(self.ledger_path, "skr-box")

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "server loop did not stop"
        self.ledger.close()


@pytest.fixture
def server(tmp_path):
    running = Running(tmp_path)
    yield running
    running.stop()


def radclient(packets: list[str], port: int, kind: str, secret: str = SECRET, tmp: Path | None = None,
              timeout: float = 2, retries: int = 3) -> subprocess.CompletedProcess:
    """Run radclient -x on a packet file; returns the finished process (never hangs)."""
    path = Path(tmp) / f"packets-{kind}-{time.monotonic_ns()}.txt"
    path.write_text("\n".join(packets))
    return subprocess.run([RADCLIENT, "-x", "-t", str(timeout), "-r", str(retries), "-f", str(path),
                           f"127.0.0.1:{port}", kind, secret], capture_output=True, text=True, timeout=60)


def mac_request(mac: str = PHONE) -> list[tuple[str, object]]:
    return mac_acl_request(mac, bssid=BSSID, ssid=SSID, nas_identifier=NAS_ID)


# -- MAC authorisation with radclient ----------------------------------------------------

@needs_radclient
def test_radclient_mac_acl_accept_carries_timeouts_and_is_recorded(server, tmp_path):
    done = radclient([radclient_text(mac_request(), message_authenticator=True)], server.cfg.auth_port, "auth",
                     tmp=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Access-Accept" in done.stdout
    # radclient checks the reply's authenticators itself; these lines show what we sent back.
    assert "Session-Timeout = 7200" in done.stdout
    assert "Idle-Timeout = 600" in done.stdout
    assert "Acct-Interim-Interval = 120" in done.stdout
    with_ma = [line for line in done.stdout.splitlines() if "Message-Authenticator" in line]
    assert len(with_ma) >= 2, "the Accept must carry a Message-Authenticator"
    reader = server.reader()
    rows = acc.auth_decisions(reader, mac=PHONE)
    assert [(r["decision"], r["reason"], r["user_name"], r["session_timeout"], r["idle_timeout"], r["nas_identifier"])
            for r in rows] == [("accept", "allowed", "3a1122334455", 7200, 600, NAS_ID)]
    assert rows[0]["called_station_id"] == f"02-5A-00-00-00-01:{SSID}"


@needs_radclient
def test_radclient_blocked_mac_is_rejected_and_recorded(server, tmp_path):
    done = radclient([radclient_text(mac_request(BLOCKED), message_authenticator=True)], server.cfg.auth_port,
                     "auth", tmp=tmp_path)
    assert "Received Access-Reject" in done.stdout, done.stdout + done.stderr
    assert "Session-Timeout" not in done.stdout
    rows = acc.auth_decisions(server.reader(), mac=BLOCKED)
    assert [(r["decision"], r["reason"]) for r in rows] == [("reject", "blocked")]


@needs_radclient
def test_radclient_without_message_authenticator_gets_no_answer(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    done = radclient([radclient_text(mac_request())], server.cfg.auth_port, "auth", tmp=tmp_path,
                     timeout=0.3, retries=1)
    assert done.returncode != 0
    assert "Received Access-Accept" not in done.stdout
    assert "no Message-Authenticator" in caplog.text
    assert acc.auth_decisions(server.reader()) == []


@needs_radclient
def test_radclient_wrong_secret_gets_no_answer(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    done = radclient([radclient_text(mac_request(), message_authenticator=True)], server.cfg.auth_port, "auth",
                     secret="not-the-secret", tmp=tmp_path, timeout=0.3, retries=1)
    assert done.returncode != 0
    assert "Message-Authenticator does not verify" in caplog.text
    assert acc.auth_decisions(server.reader()) == []


# -- accounting with radclient -------------------------------------------------------------

def acct(status: int, **kw) -> list[tuple[str, object]]:
    base = dict(mac=PHONE, session_id="5F3A9C0011223344", bssid=BSSID, ssid=SSID, nas_identifier=NAS_ID,
                event_timestamp=1_790_000_000)
    base.update(kw)
    return accounting_request(status, **base)


@needs_radclient
def test_radclient_accounting_session_is_recorded_with_gigawords_and_duplicates_once(server, tmp_path):
    big_in = 5 * 2**32 + 12345  # needs Gigawords
    packets = [
        acct(acc.STATUS_ON, mac=None, session_id="0000000000000001", event_timestamp=1_789_999_990),
        acct(acc.STATUS_START, event_timestamp=1_790_000_000),
        acct(acc.STATUS_START, event_timestamp=1_790_000_000, delay=3),  # hostapd's retransmission
        acct(acc.STATUS_INTERIM, event_timestamp=1_790_000_120, session_time=120, input_octets=big_in,
             output_octets=777, input_packets=9000, output_packets=80),
        acct(acc.STATUS_STOP, event_timestamp=1_790_000_200, session_time=200, input_octets=big_in + 10,
             output_octets=2**32, input_packets=9001, output_packets=81, terminate_cause=1),
        acct(acc.STATUS_STOP, event_timestamp=1_790_000_200, delay=6, session_time=200, input_octets=big_in + 10,
             output_octets=2**32, input_packets=9001, output_packets=81, terminate_cause=1),
        acct(acc.STATUS_OFF, mac=None, session_id="0000000000000001", event_timestamp=1_790_000_300),
    ]
    done = radclient([radclient_text(p) for p in packets], server.cfg.acct_port, "acct", tmp=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Received Accounting-Response") == len(packets), "every request, duplicates too, is answered"
    rows = acc.accounting_records(server.reader())
    got = [(r["status_type"], r["acct_session_id"], r["mac"], r["input_octets"], r["output_octets"],
            r["input_packets"], r["output_packets"], r["session_time"], r["terminate_cause"], r["event_ms"])
           for r in rows]
    assert got == [
        (7, "0000000000000001", None, None, None, None, None, None, None, 1_789_999_990_000),
        (1, "5F3A9C0011223344", PHONE, None, None, None, None, None, None, 1_790_000_000_000),
        (3, "5F3A9C0011223344", PHONE, big_in, 777, 9000, 80, 120, None, 1_790_000_120_000),
        (2, "5F3A9C0011223344", PHONE, big_in + 10, 2**32, 9001, 81, 200, 1, 1_790_000_200_000),
        (8, "0000000000000001", None, None, None, None, None, None, None, 1_790_000_300_000),
    ]
    assert rows[1]["delay_time"] == 0, "the first copy of a retransmitted request is the one kept"
    assert acc.open_sessions(server.reader()) == []


@needs_radclient
def test_accounting_on_closes_sessions_left_open(server, tmp_path):
    packets = [acct(acc.STATUS_START, event_timestamp=1_790_000_000),
               acct(acc.STATUS_START, mac="3a:11:22:33:44:66", session_id="AAAA000000000002",
                    event_timestamp=1_790_000_001)]
    assert radclient([radclient_text(p) for p in packets], server.cfg.acct_port, "acct", tmp=tmp_path).returncode == 0
    assert {r["acct_session_id"] for r in acc.open_sessions(server.reader())} == {"5F3A9C0011223344", "AAAA000000000002"}
    on = acct(acc.STATUS_ON, mac=None, session_id="0000000000000009", event_timestamp=1_790_000_500)
    assert radclient([radclient_text(on)], server.cfg.acct_port, "acct", tmp=tmp_path).returncode == 0
    assert acc.open_sessions(server.reader()) == [], "hostapd restarted: its sessions are over"


@needs_radclient
def test_radclient_accounting_with_wrong_secret_is_dropped(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    done = radclient([radclient_text(acct(acc.STATUS_START))], server.cfg.acct_port, "acct", secret="wrong-secret-1",
                     tmp=tmp_path, timeout=0.3, retries=1)
    assert done.returncode != 0
    assert "Request Authenticator does not verify" in caplog.text
    assert acc.accounting_records(server.reader()) == []


# -- raw datagrams: what is dropped, and that the server keeps serving ----------------------

def build(code: int, attrs, secret: str = SECRET, *, ma: bool = True) -> tuple[rp.Packet, bytes]:
    d = load_dictionary()
    if code == rp.AccessRequest:
        pkt = rp.AuthPacket(code=code, secret=secret.encode(), dict=d)
    else:
        pkt = rp.AcctPacket(code=code, secret=secret.encode(), dict=d)
    if ma and code == rp.AccessRequest:
        pkt.add_message_authenticator()
    for name, value in attrs:
        if name == "User-Password":
            value = pkt.PwCrypt(value)
        pkt.AddAttribute(name, value)
    return pkt, pkt.RequestPacket()


class Peer:
    """A UDP socket on a loopback address of our choosing."""

    def __init__(self, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def receive(self, timeout: float = 10) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(65535)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


def test_access_accept_has_message_authenticator_first_and_verifies(server):
    peer = Peer()
    req, raw = build(rp.AccessRequest, mac_request())
    peer.send(raw, server.cfg.auth_port)
    answer = peer.receive()
    assert answer[0] == rp.AccessAccept
    assert answer[20] == 80 and answer[21] == 18, "Message-Authenticator must be the first attribute"
    reply = rp.AuthPacket(packet=answer, secret=SECRET.encode(), dict=load_dictionary())
    assert req.VerifyReply(reply, answer, enforce_ma=True)
    assert reply["Session-Timeout"] == [7200] and reply["Idle-Timeout"] == [600]


def test_reject_has_message_authenticator_first(server):
    peer = Peer()
    req, raw = build(rp.AccessRequest, mac_request(BLOCKED))
    peer.send(raw, server.cfg.auth_port)
    answer = peer.receive()
    assert answer[0] == rp.AccessReject and answer[20] == 80
    assert req.VerifyReply(rp.AuthPacket(packet=answer, secret=SECRET.encode(), dict=load_dictionary()), answer,
                           enforce_ma=True)


def test_forged_password_and_calling_station_mismatch_are_rejected(server):
    peer = Peer()
    attrs = [(n, "aabbccddeeff" if n == "User-Password" else v) for n, v in mac_request()]
    peer.send(build(rp.AccessRequest, attrs)[1], server.cfg.auth_port)
    assert peer.receive()[0] == rp.AccessReject
    attrs = [(n, "AA-BB-CC-DD-EE-FF" if n == "Calling-Station-Id" else v) for n, v in mac_request()]
    peer.send(build(rp.AccessRequest, attrs)[1], server.cfg.auth_port)
    assert peer.receive()[0] == rp.AccessReject
    reasons = [r["reason"] for r in acc.auth_decisions(server.reader())]
    assert reasons == ["password-mismatch", "calling-station-id-mismatch"]


def _bad_datagrams() -> list[tuple[str, str, bytes, str]]:
    """(port kind, source, bytes, expected log words) for everything that must be dropped."""
    good_auth = build(rp.AccessRequest, mac_request())[1]
    good_acct = build(rp.AccountingRequest, acct(acc.STATUS_START))[1]
    oversized = bytearray(good_acct) + bytes(4200)
    oversized[2:4] = struct.pack("!H", len(oversized))
    bad_attr = bytearray(good_auth[:20]) + bytes([1, 1])  # attribute length 1 < 2
    bad_attr[2:4] = struct.pack("!H", len(bad_attr))
    return [
        ("auth", "127.0.0.1", good_auth[:12], "malformed"),                       # truncated header
        ("auth", "127.0.0.1", good_auth[:-5], "malformed"),                       # Length beyond the data
        ("auth", "127.0.0.1", bytes(bad_attr), "malformed"),
        ("acct", "127.0.0.1", bytes(oversized), "oversized"),
        ("auth", "127.0.0.1", build(rp.AccessRequest, mac_request(), "wrong-secret-1")[1], "does not verify"),
        ("acct", "127.0.0.1", build(rp.AccountingRequest, acct(acc.STATUS_START), "wrong-secret-1")[1], "does not verify"),
        ("auth", "127.0.0.2", good_auth, "unknown NAS"),
        ("acct", "127.0.0.2", good_acct, "unknown NAS"),
        ("auth", "127.0.0.1", good_acct, "not Access-Request"),
        ("acct", "127.0.0.1", good_auth, "not Accounting-Request"),
        ("acct", "127.0.0.1", build(rp.AccountingRequest, acct(acc.STATUS_START)[1:])[1], "no Acct-Status-Type"),
        ("auth", "127.0.0.1", build(rp.AccessRequest, [("User-Name", b"\xff\xfe")] + mac_request()[1:])[1], "malformed User-Name"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_datagrams())))
def test_bad_packet_is_dropped_with_a_log_line_and_server_keeps_serving(server, caplog, case):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    kind, source, data, words = _bad_datagrams()[case]
    port = server.cfg.auth_port if kind == "auth" else server.cfg.acct_port
    bad = Peer(source)
    bad.send(data, port)
    # A valid request sent afterwards on the same port is answered: the bad one was handled
    # (same socket, handled in order) and did not stop the loop.
    good = Peer()
    good_raw = build(rp.AccessRequest, mac_request())[1] if kind == "auth" else \
        build(rp.AccountingRequest, acct(acc.STATUS_INTERIM, event_timestamp=1_790_000_050))[1]
    good.send(good_raw, port)
    assert good.receive()[0] in (rp.AccessAccept, rp.AccountingResponse)
    assert bad.nothing_pending(), "a dropped packet must get no answer"
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped")]
    assert len(dropped) == 1 and words in dropped[0], dropped
    assert source in dropped[0]


def test_accounting_is_answered_only_after_commit(server, caplog):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    # Make the ledger refuse accounting rows, as a full disk would.
    side = server.reader()
    side.db.conn.execute("CREATE TRIGGER skr_refuse BEFORE INSERT ON radius_acct BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    peer = Peer()
    raw = build(rp.AccountingRequest, acct(acc.STATUS_START))[1]
    peer.send(raw, server.cfg.acct_port)
    probe = Peer()
    probe.send(build(rp.AccessRequest, mac_request())[1], server.cfg.auth_port)
    # The auth probe goes through a different socket; poll until the refusal is logged.
    assert probe.receive()[0] == rp.AccessAccept
    deadline = time.monotonic() + 10
    while "not answering" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "not answering Accounting start" in caplog.text
    assert peer.nothing_pending()
    side.db.conn.execute("DROP TRIGGER skr_refuse")
    peer.send(raw, server.cfg.acct_port)  # hostapd's retransmission
    assert peer.receive()[0] == rp.AccountingResponse
    assert len(acc.accounting_records(side)) == 1


def test_many_requests_in_one_burst_are_all_answered_and_stored(server):
    peer = Peer()
    n = 300
    for i in range(n):
        peer.send(build(rp.AccountingRequest, acct(acc.STATUS_INTERIM, event_timestamp=1_790_000_000 + i,
                                                   session_time=i))[1], server.cfg.acct_port)
    answers = [peer.receive() for _ in range(n)]
    assert all(a[0] == rp.AccountingResponse for a in answers)
    assert len(acc.accounting_records(server.reader(), limit=10 * n)) == n


def test_no_message_authenticator_accepted_when_not_required(tmp_path):
    running = Running(tmp_path, require_message_authenticator=False)
    try:
        peer = Peer()
        peer.send(build(rp.AccessRequest, mac_request(), ma=False)[1], running.cfg.auth_port)
        assert peer.receive()[0] == rp.AccessAccept
    finally:
        running.stop()


@needs_radclient
def test_an_accounting_stop_ends_the_stations_session_once(tmp_path):
    """hostapd reports the station gone: the session layer shuts the gate and writes one logout
    row "radius_stop", even when hostapd retransmits the Stop."""
    from ledger.records import Login, record_login, rows
    from netcfg.gate import MemoryGate
    from sessions import SessionManager, SessionPolicy

    running = Running(tmp_path)
    try:
        gate = MemoryGate()
        sessions = SessionManager(running.ledger, gate, SessionPolicy(3600, 3, 7, "2026-11"), tmp_path / "sessions.lock")
        sessions.admit(Login(method="line", line_user_id="U1", display_name="Somchai", friend=None,
                             friendship_changed=None, consent_version="2026-11", mac=PHONE, ip="10.99.0.61",
                             expires_ms=int((time.time() + 3600) * 1000)), 3600)
        running.server.on_stop = lambda mac, _p: sessions.end(mac, "radius_stop")
        stop = acct(acc.STATUS_STOP, event_timestamp=1_790_000_200, session_time=200)
        again = acct(acc.STATUS_STOP, event_timestamp=1_790_000_200, session_time=200, delay=4)
        done = radclient([radclient_text(stop), radclient_text(again)], running.cfg.acct_port, "acct", tmp=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 10
        while gate.authorised(mac=PHONE):
            assert time.monotonic() < deadline, "the Stop did not end the session"
            time.sleep(0.05)
        assert [r["reason"] for r in rows(running.reader(), "logouts")] == ["radius_stop"]
    finally:
        running.stop()
