"""The centre's journey, end to end and all real (issue 17, item 6's last sentence):

a phone in the simulated office logs in through the LINE sandbox and fetches a page from the
internet's web server; the box's flow logger records the NAT flow and `skillspot sync` sends
the ledger to a real `central serve` (gunicorn, chDB) running in the office's internet
namespace; the web server's access log (combined format with the client's port, as a server
behind carrier NAT must log) gives the public address, port and time; an investigator in
headless Chromium logs in with TOTP, names a case and finds the box, the phone's MAC and the
LINE user from that log line alone.

Everything runs in the namespaces of this run's own office (names with a random prefix); the
centre listens only on the internet namespace's address, so no packet leaves them.
"""
from __future__ import annotations

import json
import secrets
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from simoffice.internet import INTERNET_BODY, AccessLogLine, parse_access_line
from simoffice.office import BOX_WAN_IP, INET_GW_IP, LINE_IP, PORTAL_HOST, WEB_IP, Office

pytestmark = [pytest.mark.netns, pytest.mark.browser]
pytest.importorskip("chdb")

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "screenshots"
INVESTIGATOR = Path(__file__).resolve().parent / "browser" / "central_investigator.py"
PORTAL = f"http://{PORTAL_HOST}:8080"
BOX_ID = "demo-office-01"          # simoffice.office.office_config's box id
PW = "journey horse battery staple"
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T], deadline_s: float, why: Callable[[], str] = lambda: "") -> T:
    """Poll fn until it returns something truthy; fail naming `what` (and why()) at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}. {why()}")
        time.sleep(0.2)


class JourneyCentre:
    """The centre's files for this run: config (bound to the internet namespace's address on a
    port of this run), data dir, and the `central` commands that need only the app database."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.data = tmp / "central-data"
        # Any port is free inside a namespace we just made; random so two runs' logs differ.
        self.port = 20000 + secrets.randbelow(20000)
        self.url = f"http://{INET_GW_IP}:{self.port}"
        self.conf = tmp / "central.toml"
        # secure_cookies = false: the browser reaches the centre over plain HTTP at a non-localhost
        # address here (production is behind HTTPS).
        self.conf.write_text(f'data_dir = "{self.data}"\n[server]\nbind = "{INET_GW_IP}:{self.port}"\nthreads = 4\n'
                             '[admin]\nsecure_cookies = false\n')

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "central.cli", "--config", str(self.conf), *args]

    def run(self, *args: str, stdin: str | None = None) -> str:
        import subprocess
        proc = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"central {' '.join(args)}: {proc.stderr[-2000:]}"
        return proc.stdout

    def box_row(self, box_id: str) -> dict | None:
        import sqlite3
        conn = sqlite3.connect(self.data / "central.sqlite", timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM boxes WHERE box_id = ?", (box_id,)).fetchone()
            return dict(row) if row else None
        finally:
            conn.close()


def log_line_for(office: Office, path: str) -> AccessLogLine | None:
    """The web server's access-log line of the request for `path`, once it is written."""
    if not office.web_access_log.exists():
        return None
    for text in office.web_access_log.read_text(encoding="utf-8").splitlines():
        line = parse_access_line(text)
        if line.path == path:
            return line
    return None


def form_time(line: AccessLogLine) -> tuple[str, str]:
    """The time and zone an investigator types from the log line: as written, in its own zone."""
    offset = line.time.utcoffset()
    if offset == timedelta(hours=7):
        return line.time.strftime("%Y-%m-%d %H:%M:%S"), "Asia/Bangkok"
    if offset == timedelta(0):
        return line.time.strftime("%Y-%m-%d %H:%M:%S"), "UTC"
    return line.time.isoformat(), "UTC"  # an offset in the text wins over the zone


def sync_status(office: Office) -> dict:
    return json.loads(office.box("sync", "status", "--json"))


def test_investigator_finds_the_phone_from_the_web_servers_log_line(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium fonts-thai-tlwg)")
    centre = JourneyCentre(tmp_path)
    # A central admin makes the box's one-time enrolment code and an investigator's account
    # (both need only the app database, so they run before the centre serves).
    code = centre.run("enrol-code", "--by", "journey-admin", "--box", BOX_ID).strip()
    created = centre.run("admin", "create", "inv", "--role", "investigator", "--password-stdin", stdin=PW + "\n")
    totp = next(x.split(":", 1)[1].strip() for x in created.splitlines() if x.startswith("TOTP key:"))

    central_toml = (f'\n[central]\nurl = "{centre.url}"\nenrol_code = "{code}"\nbatch_seconds = 1\n'
                    'heartbeat_seconds = 5\nbackoff_max_seconds = 5\ntimeout_seconds = 10\n')
    with Office(workdir=tmp_path / "office", extra_toml=central_toml) as office:
        logs = lambda *names: " | ".join(  # noqa: E731 - the tail of each log, for failure messages
            f"{n}: {(office.workdir / (n + '.log')).read_text(errors='replace')[-1500:]}"
            for n in names if (office.workdir / (n + ".log")).exists())
        # The centre in the internet namespace, where the box reaches it over its WAN link.
        office.spawn("centre", office.inet_ns, centre.argv("serve"))
        # A short TIME_WAIT in the box only, so the flow's DESTROY event comes within seconds.
        office.run_in(office.box_ns, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"])
        ready = office.workdir / "flowlog.ready"
        office.spawn("flowlog", office.box_ns, office.skillspot("ledger", "flowlog", "--ready-file", str(ready),
                                                                 "--seal-seconds", "0.5"))
        wait_for("the flow logger", ready.exists, 30, lambda: logs("flowlog"))
        office.wait_tcp(office.inet_ns, INET_GW_IP, centre.port, "centre", timeout=120)
        office.spawn("sync", office.box_ns, office.skillspot("sync"))

        # The visitor: DHCP, Login with LINE (the sandbox's first user), then a page on the internet.
        lease = office.phone_dhcp()
        login = office.phone("login", PORTAL, "0", timeout=90)
        assert login["ok"], login
        users = json.loads(office.run_in(office.inet_ns, [sys.executable, "-c", (
            "import urllib.request,sys; "
            f"sys.stdout.write(urllib.request.urlopen('http://{LINE_IP}/sandbox/users', timeout=10).read().decode())"
        )]).stdout)["users"]
        user = next(u for u in users if u["user_id"] == login["user"])
        path = f"/jobs/{secrets.token_hex(6)}"
        page = office.phone("get", f"http://jobs.example.org{path}")
        assert page.get("status") == 200 and INTERNET_BODY.decode().strip() in page["body"], page

        # The police bring the server's log line: public address, port and time come from it alone.
        line = wait_for("the web server's access-log line", lambda: log_line_for(office, path), 10,
                        lambda: logs("internet-web"))
        assert line.ip == BOX_WAN_IP and line.status == 200, line  # the box's masquerade address, not the phone's

        # The box: the flow ends (short TIME_WAIT), is compacted (forced here; a box does it once
        # the segment is 10 minutes old) and synced; wait until the centre acknowledged it.
        from base.config import load_config
        from ledger.db import open_ledger
        from ledger.flows import FLAG_OPEN, flows_at, ip_int
        ledger = open_ledger(load_config(office.config_path).ledger_path, BOX_ID)
        try:
            at_ms = int(line.time.timestamp() * 1000)
            wait_for("the flow's DESTROY in the ledger", lambda: [
                f for f in flows_at(ledger, ip_int(line.ip), line.port, at_ms, 2000) if not f.flags & FLAG_OPEN], 60,
                lambda: logs("flowlog"))
            office.box("ledger", "compact", "--force")
            last_segment = ledger.db.conn.execute("SELECT MAX(id) FROM flow_segments").fetchone()[0]
            login_id = ledger.db.conn.execute("SELECT MAX(id) FROM logins").fetchone()[0]
        finally:
            ledger.close()
        assert last_segment and login_id
        st = wait_for("the centre to acknowledge the flow and the login", lambda: (
            s := sync_status(office))["acked_marks"].get("flow_segments", 0) >= last_segment
            and s["acked_marks"].get("logins", 0) >= login_id and s, 90, lambda: logs("sync", "centre"))
        assert st["last_acked_seq"] >= 1, st

        # Item 2: the box reports the address its flows carry; the centre also keeps where it saw it from.
        row = wait_for("a heartbeat with the box's public address", lambda: (
            r := centre.box_row(BOX_ID)) and r["public_address"] == BOX_WAN_IP and r, 30, lambda: logs("sync"))
        assert row["seen_address"] == BOX_WAN_IP, row

        # The investigator, in Chromium in the internet namespace (where the centre listens).
        when, zone = form_time(line)
        case_ref = f"JOURNEY/{secrets.token_hex(3)}"
        proc = office.run_in(office.inet_ns, [sys.executable, str(INVESTIGATOR), "--label=journey", centre.url,
                                              str(ARTIFACTS), "inv", PW, totp, case_ref, line.ip, str(line.port),
                                              when, zone, "5"], timeout=240, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen = json.loads(proc.stdout)

    assert BOX_ID in seen["boxes_text"] and BOX_WAN_IP in seen["boxes_text"], seen["boxes_text"]
    assert f"{line.ip}" in seen["stated"] and str(line.port) in seen["stated"], seen["stated"]
    assert len(seen["candidates"]) == 1, seen["candidates"]
    (c,) = seen["candidates"]
    assert c["box"] == BOX_ID, c
    assert c["mac"].lower() == lease["mac"].lower(), (c, lease)
    assert c["line_user_id"] == user["user_id"], (c, user)
    assert user["display_name"] in c["display_name"], (c, user)
    assert f"{WEB_IP}:80" in c["text"], c  # the destination: the web server that wrote the line
    for shot in seen["shots"]:
        assert Path(shot).stat().st_size > 5000, shot
