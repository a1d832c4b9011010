"""Memory of the box: proportional set size (PSS, /proc/PID/smaps_rollup) of every long-running
process in the simulated office's box namespace, idle and under the portal load of
bench/portal_pages.py (wrk, 32 connections, splash page, from a held phone), with --devices
online (ledger logins and kernel elements, indexed by the gate, as bench/login_scale.py makes them).

    sudo .venv/bin/python bench/footprint.py [--seconds 8]

Every long-running box process is counted: the gate, the portal, dnsmasq, the flow logger and
the RADIUS server (the last two started here as their systemd units run them; hostapd needs a
radio and is not run). Two portal set-ups are measured in the same office, one after the
other, with everything else on the box the same:

    before   the portal as it was when issue 20 was filed: two gunicorn instances (HTTP and
             HTTPS) of sync workers, `portal.workers` each, every worker importing on its own
    project  `skillspot portal` as it is now (portal/cli.py): one gunicorn for both ports

Prints each process's PSS, the totals and the ratio project/before; the goal is < 200 MB
idle and < 260 MB under load. Everything runs in this run's namespaces. Not a test.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simoffice.office import BOX_LAN_IP, PORTAL_HOST, Office  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from login_scale import add_devices  # noqa: E402

# The portal server of main at 2fa11f6, verbatim in what matters: sync workers, no preloading.
BEFORE_SERVER = """
import sys
from gunicorn.app.base import BaseApplication
from base.config import load_config
config = load_config(sys.argv[1]); tls = sys.argv[2] == "tls"
class PortalServer(BaseApplication):
    def __init__(self):
        self._options = {"bind": [f"{config.network.lan_address.ip}:{config.portal.https_port if tls else config.portal.http_port}"],
                         "workers": config.portal.workers, "worker_class": "sync", "timeout": 30,
                         "graceful_timeout": 5, "accesslog": "-", "control_socket_disable": True}
        if tls:
            self._options.update(certfile=str(config.portal.tls_cert), keyfile=str(config.portal.tls_key))
        super().__init__()
    def load_config(self):
        for k, v in self._options.items():
            self.cfg.set(k, v)
    def load(self):
        import linebot.v3.messaging  # portal.notify imported line-bot-sdk at start then
        from portal import build_services, create_app
        return create_app(config, build_services(config))
PortalServer().run()
"""


def pss_kb(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def name_of(pid: str) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    exe = Path(words[0]).name
    if "skillspot.cli" in words:
        i = words.index("skillspot.cli")
        rest = [w for w in words[i + 1:] if not w.startswith("/") and w not in ("--config",)]
        return "skillspot " + " ".join(rest[:2])
    if exe.startswith("python") and "-c" in words:
        return "python -c (before portal " + words[-1] + ")"
    return exe


def box_memory(office: Office) -> dict[str, int]:
    """PSS in kB of every process in the box namespace, keyed 'pid name'."""
    pids = subprocess.run(["ip", "netns", "pids", office.box_ns], capture_output=True, text=True).stdout.split()
    return {f"{pid} {name_of(pid)}": pss_kb(pid) for pid in pids}


def warm(office: Office) -> None:
    """A few requests on each port, so every worker has built its app, as on a box in use."""
    code = ("import requests\n"
            "for i in range(20):\n"
            f"    requests.get('http://{BOX_LAN_IP}:8080/', headers={{'Host': '{PORTAL_HOST}'}}, timeout=60)\n"
            f"    requests.get('https://{BOX_LAN_IP}:8443/api/captive', verify=False, timeout=60)\n")
    office.run_in(office.phone_ns, [sys.executable, "-W", "ignore", "-c", code], timeout=240)


def under_load(office: Office, seconds: int) -> dict[str, int]:
    """Largest total PSS seen while wrk loads the splash page; that sample's breakdown."""
    wrk = subprocess.Popen(["ip", "netns", "exec", office.phone_ns, "wrk", "-t2", "-c32", f"-d{seconds}s",
                            "-H", f"Host: {PORTAL_HOST}", f"http://{BOX_LAN_IP}:8080/"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: dict[str, int] = {}
    try:
        time.sleep(1)  # wrk opens its connections
        while wrk.poll() is None:
            sample = box_memory(office)
            if sum(sample.values()) > sum(peak.values()):
                peak = sample
            time.sleep(0.5)
    finally:
        if wrk.poll() is None:
            wrk.kill()
        out = wrk.communicate(timeout=10)[0]
    # The load must have been real: a wrk that could not connect would leave "under load" idle.
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if wrk.returncode != 0 or m is None or float(m.group(1)) < 100 or "Non-2xx" in out:
        raise SystemExit(f"wrk did not load the portal: {out.strip()[-500:]}")
    print(f"  wrk: {float(m.group(1)):,.0f} splash pages/s during the samples")
    return peak


def show(label: str, mem: dict[str, int]) -> float:
    total = sum(mem.values()) / 1024
    print(f"  {label}: {total:6.1f} MB in {len(mem)} processes")
    for key, kb in sorted(mem.items(), key=lambda kv: -kv[1]):
        print(f"      {kb / 1024:6.1f} MB  {key}")
    return total


def wait_listening(office: Office, name: str) -> None:
    office.wait_tcp(office.box_ns, BOX_LAN_IP, 8080, name)
    office.wait_tcp(office.box_ns, BOX_LAN_IP, 8443, name)


def stop(office: Office, *names: str) -> None:
    import os
    import signal
    for name in names:
        proc = office.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def start_box_services(office: Office) -> None:
    """Start the box's other long-running processes in the office's box namespace, as the
    systemd units run them: the flow logger (conntrack events into the ledger) and the RADIUS
    server (with one NAS, as hostapd would be; the office itself has no radio)."""
    import secrets
    ready = office.workdir / "flowlog.ready"
    office.spawn("flowlog", office.box_ns, office.skillspot("ledger", "flowlog", "--ready-file", str(ready)),
                 env={"SKILLSPOT_ALLOW_EXAMPLE_SECRETS": "1"})
    radius_config = office.workdir / "skillspot-radius.toml"
    radius_config.write_text(office.config_path.read_text() + "\n[[radius.clients]]\nname = \"hostapd\"\n"
                             f"address = \"127.0.0.1\"\nsecret = \"{secrets.token_hex(16)}\"\n")
    office.spawn("radius", office.box_ns, [sys.executable, "-m", "skillspot.cli", "--config", str(radius_config),
                                          "radius"], env={"SKILLSPOT_ALLOW_EXAMPLE_SECRETS": "1"})
    deadline = time.monotonic() + 60
    while not (ready.exists() and ":1812 " in office.run_in(office.box_ns, ["ss", "-ulnH"]).stdout):
        for name in ("flowlog", "radius"):
            if office.procs[name].poll() is not None:
                raise SystemExit(f"{name} exited; see {office.workdir / (name + '.log')}")
        if time.monotonic() > deadline:
            raise SystemExit("the flow logger or the RADIUS server did not come up within 60 s")
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=8, help="length of the load (3 to 60)")
    ap.add_argument("--devices", type=int, default=10_000, help="devices online throughout (0 to 250000)")
    args = ap.parse_args()
    if not 3 <= args.seconds <= 60 or not 0 <= args.devices <= 250_000:
        raise SystemExit("--seconds 3..60, --devices 0..250000")
    results = {}
    with tempfile.TemporaryDirectory(prefix="skbench-footprint-") as tmp, Office(workdir=Path(tmp)) as office:
        office.phone_dhcp()
        add_devices(office, 0, args.devices)  # ledger logins + kernel elements; the gate indexes them
        start_box_services(office)
        print(f"footprint bench, office {office.prefix}: PSS of every process in the box namespace, "
              f"{args.devices:,} devices online")
        for setup in ("project", "before"):
            if setup == "before":
                stop(office, *[n for n in ("portal", "portal-tls") if n in office.procs])
                for tls in ("plain", "tls"):
                    office.spawn(f"before-{tls}", office.box_ns,
                                 [sys.executable, "-c", BEFORE_SERVER, str(office.config_path), tls])
                wait_listening(office, "before-plain")
            warm(office)
            time.sleep(2)  # let the workers finish their first requests' garbage
            print(f"\n{setup}:")
            idle = show("idle", box_memory(office))
            loaded = show("under load (peak sample)", under_load(office, args.seconds))
            results[setup] = (idle, loaded)
    (pi, pl), (bi, bl) = results["project"], results["before"]
    print("\n| box processes, PSS | before | project | project/before | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| idle | {bi:.0f} MB | {pi:.0f} MB | {pi / bi:.2f} | < 200 MB: {'met' if pi < 200 else 'NOT met'} |")
    print(f"| under load | {bl:.0f} MB | {pl:.0f} MB | {pl / bl:.2f} | < 260 MB: {'met' if pl < 260 else 'NOT met'} |")


if __name__ == "__main__":
    main()
