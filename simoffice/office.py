"""A simulated office in network namespaces: a phone, the box and a small internet.

    phone (eth0, DHCP) ──veth── lan0 [ box: dnsmasq, nftables, portal ] wan0 ──veth── eth0 [ internet ]
                                                                                 DNS, web server, LINE sandbox

The box runs the real configuration rendered from a real config file; the internet namespace
answers DNS for every name (LINE's hosts to the sandbox, everything else to one web server),
so no packet ever leaves the machine. Used by `skillspot demo` and by the end-to-end tests.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pyroute2 import netns

from base.config import ALLOW_EXAMPLE_SECRETS_ENV

LAN_NET = "10.99.0"
BOX_LAN_IP = f"{LAN_NET}.1"
BOX_WAN_IP = "198.51.100.2"      # TEST-NET-2: exists only inside our namespaces
INET_GW_IP = "198.51.100.1"
LINE_IP = "203.0.113.10"         # TEST-NET-3: the LINE sandbox (access.line.me, api.line.me)
WEB_IP = "203.0.113.20"          # every other name: the internet's one web server
PORTAL_HOST = "portal.skillspot.test"
CHANNEL_ID = "2000000001"
CHANNEL_SECRET = "5f1c2e3d4b5a69788796a5b4c3d2e1f0"


class OfficeError(Exception):
    """A step of building or running the simulated office failed."""


@dataclass
class Office:
    """The three namespaces and every process in them; a context manager that always cleans up."""

    workdir: Path
    # A name of this run's own for every namespace and interface, so two demos and the test
    # suite can run on one host at once. Short: interface names are "PREFIXp0" (15 chars max).
    prefix: str = field(default_factory=lambda: "s" + secrets.token_hex(3))
    session_seconds: int = 3600
    sweep_seconds: int = 2                                # [gate] sweep_seconds (production default: 10)
    portal_settings: dict = field(default_factory=dict)  # more [portal] keys, e.g. {"bandwidth_kbit": 8000}
    extra_toml: str = ""                                  # more sections, e.g. an [admin] table
    say: Callable[[str], None] = lambda msg: None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def phone_ns(self) -> str:
        return f"{self.prefix}-phone"

    @property
    def box_ns(self) -> str:
        return f"{self.prefix}-box"

    @property
    def inet_ns(self) -> str:
        return f"{self.prefix}-inet"

    @property
    def config_path(self) -> Path:
        return self.workdir / "skillspot.toml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def web_access_log(self) -> Path:
        """The internet web server's access log (combined format with the client's port, Bangkok time)."""
        return self.workdir / "internet-access.log"

    @property
    def gate_socket(self) -> Path:
        """This office's gate socket (a file of its own run: Unix sockets are not per namespace)."""
        return self.workdir / "gate.sock"

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> "Office":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self) -> None:
        """Create the namespaces and links, write the config, start every daemon."""
        if os.geteuid() != 0:
            raise OfficeError("the simulated office needs root: it creates network namespaces and runs "
                              "dnsmasq and nftables. Run it with sudo.")
        for tool in ("ip", "nft", "dnsmasq"):
            if shutil.which(tool) is None:
                raise OfficeError(f"{tool} is not installed; on Debian: apt-get install nftables dnsmasq-base iproute2")
        if not 1 <= len(self.prefix) <= 11 or not self.prefix.isalnum():
            raise OfficeError(f"office prefix {self.prefix!r} must be 1 to 11 letters or digits (interface names "
                              "are limited to 15 characters)")
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.close_namespaces()  # leftovers of an earlier run with this prefix that was killed hard
            self._build_links()
            self._write_config()
            self._start_internet()
            self._start_box()
        except OfficeError:
            raise
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise OfficeError(f"building the office failed at `{' '.join(map(str, exc.cmd))}`: {detail or exc}. "
                              "Fix: run as root on a host with iproute2, nftables and dnsmasq-base; "
                              "`ip netns list` shows leftovers to delete") from None
        except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
            raise OfficeError(f"building the office failed: {type(exc).__name__}: {exc}. Fix: run as root; "
                              f"`ip netns list` shows leftover namespaces (ours start with {self.prefix[:1]}); "
                              f"logs are in {self.workdir}") from None

    def close(self) -> None:
        """Stop every process we started and remove the namespaces; safe to call twice."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            self.procs.pop(name, None)
        self.close_namespaces()

    def close_namespaces(self) -> None:
        """Remove our namespaces (killing anything left inside) and their /etc/netns files."""
        for ns in (self.phone_ns, self.box_ns, self.inet_ns):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            if ns in netns.listnetns():
                subprocess.run(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)

    # -- construction -------------------------------------------------------------

    def _build_links(self) -> None:
        self.say(f"creating namespaces {self.phone_ns}, {self.box_ns} and {self.inet_ns} (phone, box, internet)")
        for ns in (self.phone_ns, self.box_ns, self.inet_ns):
            # iproute2 creates the namespace: it also sets up /run/netns mount propagation, which
            # other tools running at the same time rely on.
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        # iproute2 for the links too: pyroute2's NetNS helper processes raced when two offices
        # were built at once (a link looked up in one namespace was not there yet).
        self._veth(f"{self.prefix}p0", self.phone_ns, "eth0", f"{self.prefix}b0", self.box_ns, "lan0")
        self._veth(f"{self.prefix}b1", self.box_ns, "wan0", f"{self.prefix}i0", self.inet_ns, "eth0")
        for ns in (self.phone_ns, self.box_ns, self.inet_ns):
            self._ip(ns, "link", "set", "lo", "up")
        self._addr(self.box_ns, "lan0", f"{BOX_LAN_IP}/24")
        self._addr(self.box_ns, "wan0", f"{BOX_WAN_IP}/24")
        self._ip(self.box_ns, "route", "add", "default", "via", INET_GW_IP)
        self._addr(self.inet_ns, "eth0", f"{INET_GW_IP}/24")
        for ip in (LINE_IP, WEB_IP):
            self._ip(self.inet_ns, "addr", "add", f"{ip}/32", "dev", "lo")
        self._ip(self.phone_ns, "link", "set", "eth0", "up")
        for ns, key in ((self.box_ns, "net.ipv4.ip_forward"), (self.box_ns, "net.ipv6.conf.all.forwarding")):
            self.run_in(ns, ["sysctl", "-q", "-w", f"{key}=1"])
        # The phone's resolver comes from DHCP later; the box resolves through its own dnsmasq.
        self._resolv(self.box_ns, BOX_LAN_IP)

    @staticmethod
    def _ip(ns: str | None, *args: str) -> None:
        argv = ["ip", *(["-n", ns] if ns else []), *args]
        subprocess.run(argv, check=True, capture_output=True)

    def _veth(self, a: str, ns_a: str, name_a: str, b: str, ns_b: str, name_b: str) -> None:
        # Created inside the namespaces under their final names: nothing appears on the host.
        self._ip(None, "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
        self._ip(ns_a, "link", "set", a, "name", name_a)
        self._ip(ns_b, "link", "set", b, "name", name_b)

    def _addr(self, ns: str, ifname: str, cidr: str) -> None:
        self._ip(ns, "link", "set", ifname, "up")
        self._ip(ns, "addr", "add", cidr, "dev", ifname)

    @staticmethod
    def _resolv(ns: str, server: str) -> None:
        # `ip netns exec` bind-mounts /etc/netns/NS/* over /etc: each namespace its own resolver.
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(f"nameserver {server}\n")

    @property
    def ca_cert(self) -> Path:
        """The demo CA the phone trusts, as a phone trusts the public CA of a real box's certificate."""
        return self.workdir / "tls" / "demo-ca.pem"

    def _write_config(self) -> None:
        from simoffice.democerts import make_demo_certs
        certs = make_demo_certs(self.workdir / "tls", PORTAL_HOST, BOX_LAN_IP)
        text = office_config(self.data_dir, self.session_seconds, certs.cert, certs.key, self.gate_socket)
        text = text.replace("sweep_seconds = 2\n", f"sweep_seconds = {self.sweep_seconds}\n")
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.portal_settings.items())
        text = text.replace("\n[line]\n", f"{extra}\n[line]\n", 1) + self.extra_toml
        self.config_path.write_text(text)
        from base.config import load_config
        load_config(self.config_path)  # fail here, clearly, rather than in a daemon

    # -- processes ----------------------------------------------------------------

    def spawn(self, name: str, ns: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Start a long-running process in a namespace, its output in WORKDIR/NAME.log."""
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
        log.close()
        self.procs[name] = proc
        return proc

    def run_in(self, ns: str, argv: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run a short command in a namespace and wait for it."""
        proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise OfficeError(f"{' '.join(argv)} in {ns} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def skillspot(self, *args: str) -> list[str]:
        """argv for a `skillspot` subcommand using this office's config."""
        return [sys.executable, "-m", "skillspot.cli", "--config", str(self.config_path), *args]

    def wait_tcp(self, ns: str, host: str, port: int, name: str, timeout: float = 30) -> None:
        """Block until something listens on host:port inside `ns`, or fail naming the log to read."""
        code = ("import socket,sys,time\n"
                f"end=time.monotonic()+{timeout}\n"
                "while time.monotonic()<end:\n"
                f"    try: socket.create_connection(({host!r},{port}),1).close(); sys.exit(0)\n"
                "    except OSError: time.sleep(0.1)\n"
                "sys.exit(1)\n")
        proc = self.procs.get(name)
        if self.run_in(ns, [sys.executable, "-c", code], timeout=timeout + 10, check=False).returncode != 0:
            raise OfficeError(f"{name} did not start listening on {host}:{port}; see {self.workdir / (name + '.log')}")
        if proc is not None and proc.poll() is not None:
            raise OfficeError(f"{name} exited; see {self.workdir / (name + '.log')}")

    def _start_internet(self) -> None:
        self.say("starting the internet: DNS, a web server and the LINE sandbox")
        self.spawn("internet-dns", self.inet_ns, [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--log-facility=-",
            "--pid-file", f"--listen-address={INET_GW_IP}", "--bind-interfaces",
            # LINE's hosts go to the sandbox, every other name to the one web server.
            f"--address=/line.me/{LINE_IP}", f"--address=/line-scdn.net/{LINE_IP}", f"--address=/#/{WEB_IP}"])
        self.spawn("internet-web", self.inet_ns, [sys.executable, "-m", "simoffice.internet", "--access-log",
                                                  str(self.web_access_log), WEB_IP, "80", "443"])
        self.spawn("line-sandbox", self.inet_ns, self.skillspot("line-sandbox", "--host", LINE_IP, "--port", "80"))
        self.wait_tcp(self.inet_ns, INET_GW_IP, 53, "internet-dns")
        self.wait_tcp(self.inet_ns, WEB_IP, 80, "internet-web")
        self.wait_tcp(self.inet_ns, LINE_IP, 80, "line-sandbox")

    def start_gate(self, timeout: float = 30) -> subprocess.Popen:
        """Start `skillspot gate` in the box (it applies the ruleset and reconciles) and wait
        until it answers on its socket."""
        # The office's secrets are published in this file: only the demo override lets them start.
        proc = self.spawn("gate", self.box_ns, self.skillspot("gate"), env={ALLOW_EXAMPLE_SECRETS_ENV: "1"})
        self.wait_gate(timeout)
        return proc

    def wait_gate(self, timeout: float = 30) -> None:
        """Block until the gate answers health on its socket, or fail naming its log."""
        from netcfg.gate import GateError
        from netcfg.gateclient import GateClient
        client = GateClient(self.gate_socket, timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs.get("gate")
            if proc is not None and proc.poll() is not None:
                raise OfficeError(f"the gate exited ({proc.returncode}); see {self.workdir / 'gate.log'}")
            try:
                client.health()
                return
            except GateError:
                if time.monotonic() > deadline:
                    raise OfficeError(f"the gate did not answer on {self.gate_socket} within {timeout}s; "
                                      f"see {self.workdir / 'gate.log'}") from None
                time.sleep(0.05)

    def _start_box(self) -> None:
        self.say("starting the box: the gate (nftables), dnsmasq and the portal under gunicorn")
        self.start_gate()
        self.run_in(self.box_ns, self.skillspot("render", "--out", str(self.workdir / "etc")))
        self.spawn("box-dnsmasq", self.box_ns, [
            "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-dhcp", "--pid-file",
            f"--conf-file={self.workdir / 'etc' / 'dnsmasq.conf'}"])
        # The office's secrets are published in this file: only the demo override lets them start.
        demo = {ALLOW_EXAMPLE_SECRETS_ENV: "1"}
        self.spawn("portal", self.box_ns, self.skillspot("portal"), env=demo)  # HTTP and HTTPS, one server
        self.wait_tcp(self.box_ns, BOX_LAN_IP, 53, "box-dnsmasq")
        self.wait_tcp(self.box_ns, BOX_LAN_IP, 8080, "portal")
        self.wait_tcp(self.box_ns, BOX_LAN_IP, 8443, "portal")

    # -- the phone --------------------------------------------------------------------

    def phone(self, *args: str, timeout: float = 60) -> dict:
        """Run one phone action (simoffice.phone) inside the phone namespace; its JSON result."""
        proc = self.run_in(self.phone_ns, ["env", f"REQUESTS_CA_BUNDLE={self.ca_cert}", sys.executable, "-m",
                                           "simoffice.phone", *args], timeout=timeout, check=False)
        if proc.returncode != 0:
            raise OfficeError(f"phone {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
        return json.loads(proc.stdout)

    def phone_dhcp(self) -> dict:
        """Get a lease for the phone and point its resolver at the DNS server it was given."""
        lease = self.phone("dhcp", "eth0")
        self._resolv(self.phone_ns, lease["dns"])
        return lease

    def box(self, *args: str) -> str:
        """Run a `skillspot` subcommand in the box namespace; its standard output."""
        return self.run_in(self.box_ns, self.skillspot(*args)).stdout


def office_config(data_dir: Path, session_seconds: int, tls_cert: Path, tls_key: Path, gate_socket: Path) -> str:
    """The box configuration of the simulated office."""
    return f"""\
[box]
id = "demo-office-01"
office = "ศูนย์พัฒนาฝีมือแรงงาน (simulated office)"
data_dir = "{data_dir}"
coordinator = "demo"

[network]
lan_interface = "lan0"
wan_interface = "wan0"
lan_address = "{BOX_LAN_IP}/24"
dhcp_range = ["{LAN_NET}.50", "{LAN_NET}.150"]
lease_seconds = 600
upstream_dns = ["{INET_GW_IP}"]
walled_garden = ["line.me", "line-scdn.net"]
# The sandbox speaks plain HTTP on port 80; real LINE is HTTPS only (443).
walled_garden_ports = [80, 443]

[portal]
hostname = "{PORTAL_HOST}"
http_port = 8080
https_port = 8443
session_seconds = {session_seconds}
secret_key = "demo-only-secret-key-0123456789abcdef"
bot_prompt = "aggressive"
workers = 2
tls_cert = "{tls_cert}"
tls_key = "{tls_key}"

[line]
channel_id = "{CHANNEL_ID}"
channel_secret = "{CHANNEL_SECRET}"
login_base_url = "http://access.line.me"
api_base_url = "http://api.line.me"
messaging_base_url = "http://api.line.me"
messaging_access_token = "sandbox-token"
oa_basic_id = "@dsd-demo"

[gate]
socket = "{gate_socket}"
socket_group = ""
sweep_seconds = 2
"""
