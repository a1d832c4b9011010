"""hostapd 2.10 itself talking to `skillspot radius`, inside our own namespaces.

hostapd runs with driver=wired on a veth in a "box" namespace, on the hostapd.conf that
provisioning/hostapd.py renders (plus the 802.1X keys a wired station needs); a phone
namespace runs wpa_supplicant's wired 802.1X so that hostapd has a station to account for.
The RADIUS server and the DAS client run in the box namespace, on its loopback.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import accounting as acc
from ledger.db import open_ledger
from provisioning.hostapd import render_hostapd_conf
from base.config import load_config

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not (shutil.which("hostapd") and shutil.which("wpa_supplicant")),
                                 reason="hostapd and wpa_supplicant (Debian hostapd, wpasupplicant) needed")]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "skillspot.toml"


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30).stdout


def wait_for(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def base_sections(data_dir: Path) -> str:
    """[box] .. [line] of the example config, with the ledger in `data_dir`."""
    text = EXAMPLE.read_text(encoding="utf-8")
    head = text.split("\n[radius]")[0]
    return head.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{data_dir}"')


class Lab:
    """Two namespaces joined by a veth, and every process started in them."""

    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(3)
        self.tmp = tmp
        self.box, self.phone = f"skrb{tag}", f"skrp{tag}"
        self.ap_if, self.sta_if = f"skra{tag}", f"skrs{tag}"
        self.procs: list[subprocess.Popen] = []
        run("ip", "netns", "add", self.box)
        run("ip", "netns", "add", self.phone)
        run("ip", "link", "add", self.ap_if, "type", "veth", "peer", "name", self.sta_if)
        run("ip", "link", "set", self.ap_if, "netns", self.box)
        run("ip", "link", "set", self.sta_if, "netns", self.phone)
        for ns, ifname in ((self.box, self.ap_if), (self.phone, self.sta_if)):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", ifname, "up")

    def mac(self, ns: str, ifname: str) -> str:
        return json.loads(run("ip", "-n", ns, "-j", "link", "show", ifname))[0]["address"]

    def start(self, ns: str, cmd: list[str], log: Path) -> subprocess.Popen:
        fh = open(log, "w")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=fh, stderr=subprocess.STDOUT)
        fh.close()
        self.procs.append(proc)
        return proc

    def exec(self, ns: str, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for ns in (self.box, self.phone):
            # Anything still inside is ours (the namespaces are): end it by pid.
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def lab(tmp_path):
    built = Lab(tmp_path)
    try:
        yield built
    finally:
        built.close()


def write_config(lab: Lab) -> Path:
    path = lab.tmp / "skillspot.toml"
    path.write_text(base_sections(lab.tmp / "data") + f"""
[radius]
auth_port = 28112
acct_port = 28113
das_port = 37991
das_secret = "skr-das-secret-1"
block_list = ["02:00:00:00:00:66"]

[[radius.clients]]
name = "skr-hostapd"
address = "127.0.0.1"
secret = "skr-radius-secret-1"

[hostapd]
interface = "{lab.ap_if}"
driver = "wired"
ssid = "DSD Free WiFi"
channel = 6
nas_identifier = "skr-ap1"
ctrl_interface = "{lab.tmp / 'hostapd-ctrl'}"
""", encoding="utf-8")
    return path


def hostapd_conf(lab: Lab, cfg_path: Path, interim: int) -> Path:
    cfg = load_config(cfg_path)
    eap_users = lab.tmp / "eap_users"
    eap_users.write_text('"visitor" MD5 "visitor-pw"\n')
    # Config refuses intervals under 60 s (hostapd ignores RADIUS ones that short); the key
    # itself is not range-checked by hostapd, so the test bypasses validation to wait less.
    radius = cfg.radius.model_copy(update={"interim_interval_seconds": interim})
    text = render_hostapd_conf(cfg.hostapd, radius, extra={
        "ieee8021x": "1", "eap_server": "1", "eap_user_file": str(eap_users)})
    path = lab.tmp / "hostapd.conf"
    path.write_text(text)
    return path


def test_hostapd_accounting_and_disconnect_against_our_server(lab):
    cfg_path = write_config(lab)
    cfg = load_config(cfg_path)
    server_log = lab.tmp / "radius.log"
    lab.start(lab.box, [sys.executable, "-m", "skillspot.cli", "-c", str(cfg_path), "radius", "-v"], server_log)
    wait_for("the RADIUS server to listen", lambda: "RADIUS listening" in server_log.read_text())
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)

    hostapd_log = lab.tmp / "hostapd.log"
    hostapd = lab.start(lab.box, ["hostapd", "-dd", str(hostapd_conf(lab, cfg_path, interim=3))], hostapd_log)
    wait_for("hostapd AP-ENABLED on the rendered config", lambda: "AP-ENABLED" in hostapd_log.read_text())

    def rows(status):
        return [r for r in acc.accounting_records(ledger) if r["status_type"] == status]

    on = wait_for("Accounting-On from hostapd", lambda: rows(acc.STATUS_ON))
    assert on[0]["nas_identifier"] == "skr-ap1" and on[0]["nas_address"] == "127.0.0.1"
    assert on[0]["event_ms"] is not None

    # A station: wired 802.1X (hostapd's internal EAP server) stands in for a Wi-Fi association.
    sta_mac = lab.mac(lab.phone, lab.sta_if)
    wpa_conf = lab.tmp / "wpa.conf"
    wpa_conf.write_text('ap_scan=0\nnetwork={\n key_mgmt=IEEE8021X\n eap=MD5\n identity="visitor"\n'
                        ' password="visitor-pw"\n eapol_flags=0\n}\n')
    lab.start(lab.phone, ["wpa_supplicant", "-D", "wired", "-i", lab.sta_if, "-c", str(wpa_conf)],
              lab.tmp / "wpa.log")
    start = wait_for("Accounting Start for the station", lambda: rows(acc.STATUS_START))
    assert start[0]["mac"] == sta_mac
    assert start[0]["user_name"] == sta_mac.replace(":", "")
    assert start[0]["called_station_id"].endswith(":DSD Free WiFi")
    session = start[0]["acct_session_id"]
    assert len(session) == 16
    interim = wait_for("an Interim-Update", lambda: rows(acc.STATUS_INTERIM), timeout=30)
    assert interim[0]["acct_session_id"] == session and interim[0]["session_time"] is not None

    # The admin revokes the station: Disconnect-Request to hostapd's DAS port, ACK recorded.
    done = lab.exec(lab.box, [sys.executable, "-m", "skillspot.cli", "-c", str(cfg_path), "radius", "disconnect",
                              sta_mac.upper().replace(":", "-")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Disconnect-ACK" in done.stdout
    stop = wait_for("Accounting Stop after the Disconnect", lambda: rows(acc.STATUS_STOP))
    assert stop[0]["acct_session_id"] == session and stop[0]["session_time"] is not None
    # A station hostapd does not have: NAK with Error-Cause 503, recorded as such.
    again = lab.exec(lab.box, [sys.executable, "-m", "skillspot.cli", "-c", str(cfg_path), "radius", "disconnect",
                               "02:00:00:00:00:77"])
    assert again.returncode == 1 and "503" in again.stdout, again.stdout + again.stderr
    got = [(r["mac"], r["acked"], r["error_cause"]) for r in acc.disconnects(ledger)]
    assert got == [(sta_mac, 1, None), ("02:00:00:00:00:77", 0, 503)]

    # Clean shutdown: Accounting-Off, and nothing is left open.
    hostapd.terminate()
    hostapd.wait(15)
    wait_for("Accounting-Off", lambda: rows(acc.STATUS_OFF))
    assert acc.open_sessions(ledger) == []
    log = server_log.read_text()
    assert "dropped" not in log, log
    ledger.close()


def test_hostapd_refuses_a_broken_rendered_file(lab):
    """Starting hostapd is how a rendered file is validated: prove that catches errors."""
    cfg_path = write_config(lab)
    cfg = load_config(cfg_path)
    bad = lab.tmp / "bad.conf"
    bad.write_text(render_hostapd_conf(cfg.hostapd, cfg.radius, extra={"skr_not_a_key": "1"}))
    done = lab.exec(lab.box, ["timeout", "20", "hostapd", str(bad)])
    assert done.returncode != 0
    assert "unknown configuration item 'skr_not_a_key'" in done.stdout + done.stderr


def test_disconnect_without_answer_is_reported_and_recorded(lab):
    cfg_path = write_config(lab)
    # Nothing listens on the DAS port in this namespace: no ACK, a readable detail, exit 1.
    done = lab.exec(lab.box, [sys.executable, "-m", "skillspot.cli", "-c", str(cfg_path), "radius", "disconnect",
                              "3a:11:22:33:44:55"])
    assert done.returncode == 1
    assert "37991" in done.stdout
    cfg = load_config(cfg_path)
    rows = acc.disconnects(open_ledger(cfg.ledger_path, cfg.box.id))
    assert [(r["mac"], r["acked"], r["error_cause"]) for r in rows] == [("3a:11:22:33:44:55", 0, None)]
