"""A box of one namespace with the real `skillspot gate` in it, for the gate and session tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator
from pathlib import Path

from ledger.db import open_ledger
from ledger.records import active_logins
from netcfg.gate import GateError
from netcfg.gateclient import GateClient

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"

# Runs one session action in a process of its own, as the portal or the CLI would.
CLIENT = """
import sys, time
from base.config import load_config
from ledger.db import open_ledger
from ledger.records import Login
from sessions import build_sessions
cfg = load_config(sys.argv[1])
action, mac, ip = sys.argv[2:5]
s = build_sessions(cfg, open_ledger(cfg.ledger_path, cfg.box.id))
if action == "login":
    s.admit(Login(method="line", line_user_id="Ucrash", display_name="Crash Test", friend=None,
                  friendship_changed=None, consent_version=cfg.portal.terms_version, mac=mac, ip=ip,
                  expires_ms=int((time.time() + 600) * 1000)), 600)
else:
    s.end(mac, action, admin="crash-test")
"""


class GateBox:
    """One namespace, a config of this run's own, and the gate process (started and killed at will)."""

    def __init__(self, tmp: Path, sweep_seconds: int = 1, idle_seconds: int = 900) -> None:
        self.tmp = tmp
        self.ns = f"skg-{uuid.uuid4().hex[:8]}"
        self.socket = tmp / "gate.sock"
        self.config = tmp / "skillspot.toml"
        text = EXAMPLE.read_text(encoding="utf-8")
        text = text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp / "data"}"')
        text = text.replace('das_secret = "das-secret-change-me"', 'das_secret = ""')
        text = text.replace("idle_seconds = 900", f"idle_seconds = {idle_seconds}")
        text = text.replace('socket = "/run/skillspot/gate.sock"', f'socket = "{self.socket}"')
        text = text.replace('socket_group = "skillspot-gate"', 'socket_group = ""')
        text = text.replace("sweep_seconds = 10", f"sweep_seconds = {sweep_seconds}")
        self.config.write_text(text, encoding="utf-8")
        self.proc: subprocess.Popen | None = None
        subprocess.run(["ip", "netns", "add", self.ns], check=True)

    def start(self, fault: str | None = None, timeout: float = 30) -> None:
        """Start the gate and wait until it answers."""
        env = {**os.environ}
        env.pop("SKILLSPOT_FAULT", None)
        if fault:
            env["SKILLSPOT_FAULT"] = fault
        log = open(self.tmp / "gate.log", "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-m", "skillspot.cli",
                                      "--config", str(self.config), "gate"], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        log.close()
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"gate exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                client.health()
                return
            except GateError:
                assert time.monotonic() < deadline, f"gate did not answer: {self.log()[-2000:]}"
                time.sleep(0.05)

    def kill(self) -> int | None:
        """kill -9 the gate (a crash); its exit code (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self.proc = None
        return code

    def client(self) -> GateClient:
        return GateClient(self.socket, timeout=5)

    def log(self) -> str:
        return (self.tmp / "gate.log").read_text(errors="replace")

    def session(self, action: str, mac: str, ip: str = "", fault: str | None = None) -> subprocess.CompletedProcess:
        """Run one session action (login, or an end reason) in a process of its own."""
        env = {**os.environ}
        env.pop("SKILLSPOT_FAULT", None)
        if fault:
            env["SKILLSPOT_FAULT"] = fault
        return subprocess.run([sys.executable, "-c", CLIENT, str(self.config), action, mac, ip],
                              capture_output=True, text=True, env=env, timeout=60)

    def nft(self, *args: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.ns, "nft", *args], capture_output=True, text=True,
                              check=True).stdout

    def kernel(self) -> set[tuple[str, str]]:
        """(mac, ip) of every element of the authorised set, read with nft itself."""
        data = json.loads(self.nft("-j", "list", "set", "inet", "skillspot", "authorised"))
        out = set()
        for item in data["nftables"]:
            for e in item.get("set", {}).get("elem", []):
                elem = e.get("elem", e) if isinstance(e, dict) else e
                out.add(tuple(elem["val"]["concat"]))
        return out

    def ledger(self):
        return open_ledger(self.tmp / "data" / "ledger.sqlite", "test")

    def ledger_live(self) -> set[tuple[str, str]]:
        led = self.ledger()
        try:
            return {(r["mac"], r["ip"]) for r in active_logins(led)}
        finally:
            led.close()

    def rows(self, sql: str) -> list[tuple]:
        led = self.ledger()
        try:
            return led.db.execute(sql).fetchall()
        finally:
            led.close()

    def close(self) -> None:
        self.kill()
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


@contextmanager
def started_gate_box(tmp: Path, **kwargs) -> Iterator[GateBox]:
    """A GateBox with its gate started, closed (gate killed, namespace deleted) however the
    block ends; `kwargs` go to GateBox."""
    box = GateBox(tmp, **kwargs)
    try:
        box.start()
        yield box
    finally:
        box.close()
