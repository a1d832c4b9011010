"""Portal pages against devices online, and HTTPS against HTTP, in the simulated office.

    sudo .venv/bin/python bench/portal_pages.py [--seconds 5] [--rounds 9] [--devices 10000]

A phone held at the portal (it has a lease but never logged in) runs Debian's wrk (2 threads,
32 connections) against the box's portal for each of:

    splash     GET http://portal/                 (the sign-in page)
    probe      GET http://<any host>/hotspot-detect.html, Host: captive.apple.com
               (the firewall sends it to the portal, which answers the redirect)
    api-http   GET http://portal:8080/api/captive (RFC 8908 handler over HTTP)
    api-https  GET https://portal:8443/api/captive (the same handler over HTTPS; wrk opens its
               connections through the TLS handshake inside the measured time)

on two offices side by side, one with no device online and one with --devices online (ledger
logins + kernel elements + the gate): in every round each page runs on both, back to back, the
order alternating. The ratio reported is the median over rounds of those side-by-side pairs:
this VM's speed drifts by up to 1.5x over minutes, even with no steal time, and a pair taken
seconds apart cancels the drift (the best-round ratio is printed too; each run prints the host's
steal time: CPU the hypervisor gave to other guests). Prints requests/s, requests per CPU-second of
the box (the cost of a request, which other work on the machine hardly moves) and the ratios the issue
asks for: each page at N devices over the same at 0, and api-https over api-http.
Everything runs in this run's namespaces and is removed at the end. Not a test.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simoffice.office import BOX_LAN_IP, PORTAL_HOST, WEB_IP, Office  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from login_scale import add_devices, cpu_ticks, fake  # noqa: E402

PAGES = {
    "splash": (f"http://{BOX_LAN_IP}:8080/", PORTAL_HOST, 200),
    "probe": (f"http://{WEB_IP}/hotspot-detect.html", "captive.apple.com", 302),
    "api-http": (f"http://{BOX_LAN_IP}:8080/api/captive", PORTAL_HOST, 200),
    "api-https": (f"https://{BOX_LAN_IP}:8443/api/captive", PORTAL_HOST, 200),
}


def box_cpu_seconds(office: Office) -> float:
    """CPU time (user + system) used so far by every process in the box namespace: the
    portal's master and workers, the gate, dnsmasq. Children that already exited are counted
    by their parents (cutime, cstime)."""
    import os
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = subprocess.run(["ip", "netns", "pids", office.box_ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def wrk(office: Office, url: str, host: str, seconds: int) -> tuple[float, float, str]:
    """Requests/s of good answers from the held phone, good answers per CPU-second the box spent
    on them, and a note of errors if any. The second figure is the cost per request: other work
    on this machine slows wrk down but hardly changes what one request costs the box."""
    cpu0 = box_cpu_seconds(office)
    proc = office.run_in(office.phone_ns, ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s",
                                           "-H", f"Host: {host}", url], timeout=seconds + 60, check=False)
    cpu = box_cpu_seconds(office) - cpu0
    out = proc.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"wrk {url} failed: {proc.stderr.strip() or out}")
    notes = []
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        notes.append(f"{bad.group(1)} non-2xx/3xx")
    errs = re.search(r"Socket errors: (.*)", out)
    if errs:
        notes.append("socket errors: " + errs.group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    good = total - (int(bad.group(1)) if bad else 0)
    return float(m.group(1)) * good / max(total, 1), good / max(cpu, 1e-3), "; ".join(notes)


def status_of(office: Office, url: str, host: str) -> int:
    code = ("import sys, requests\n"
            f"r = requests.get({url!r}, headers={{'Host': {host!r}}}, allow_redirects=False, verify=False, timeout=10)\n"
            "print(r.status_code)\n")
    return int(office.run_in(office.phone_ns, [sys.executable, "-W", "ignore", "-c", code]).stdout)


def devices(n: int) -> list[tuple[str, str]]:
    return [fake(i) for i in range(n)]


def let_in(office: Office, devs: list[tuple[str, str]]) -> float:
    """Make the devices online as a box holds them after logins: live login rows in the ledger,
    elements in the kernel's sets, the gate's index rebuilt (bench/login_scale.py does the
    same). Logging 10,000 devices in one by one would only time the login path."""
    t0 = time.monotonic()
    add_devices(office, 0, len(devs))
    return time.monotonic() - t0


def online_now(office: Office) -> int:
    from netcfg.gateclient import GateClient
    return int(GateClient(office.gate_socket, timeout=30).health()["devices"])


def prepare(office: Office) -> None:
    """Hold the phone at the portal and check each page answers as expected."""
    office.phone_dhcp()  # held: a lease, never a login
    # One phone opens thousands of connections a second to one address (the probe answer
    # closes each). With Linux's defaults its TIME_WAIT sockets, 12,000 after one 5 s run,
    # crowd the 28,000 local ports, and connect() slows: at 0 devices online the probe rate
    # fell from 2,414 to 581 req/s over five runs in a row, so whichever phase ran later
    # looked slower. A real office spreads that load over thousands of phones; here the phone
    # may reuse TIME_WAIT ports for new connections, from the whole port range.
    office.run_in(office.phone_ns, ["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1",
                                    "net.ipv4.ip_local_port_range=1024 65535"])
    for name, (url, host, want) in PAGES.items():
        got = status_of(office, url, host)
        if got != want:
            raise SystemExit(f"{name}: {url} answered {got}, expected {want}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="length of each wrk run (1 to 30)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (1 to 9)")
    ap.add_argument("--devices", type=int, default=10_000, help="devices online in the busy office")
    args = ap.parse_args()
    if not (1 <= args.seconds <= 30 and 1 <= args.rounds <= 9 and 1 <= args.devices <= 250_000):
        raise SystemExit("--seconds 1..30, --rounds 1..9, --devices 1..250000")
    n = args.devices
    with tempfile.TemporaryDirectory(prefix="skbench-pages-") as tmp, \
            Office(workdir=Path(tmp) / "empty", sweep_seconds=10) as empty, \
            Office(workdir=Path(tmp) / "busy", sweep_seconds=10) as busy:  # the production sweep interval
        offices = {0: empty, n: busy}
        for office in offices.values():
            prepare(office)
        took = let_in(busy, devices(n))
        for online, office in offices.items():
            if online_now(office) != online:
                raise SystemExit(f"the gate of office {office.prefix} reports {online_now(office)} devices online, "
                                 f"wanted {online}")
        print(f"portal pages bench, offices {empty.prefix} (0 online) and {busy.prefix} ({n:,} online, made "
              f"online in {took:.1f} s): wrk -t2 -c32, {args.seconds} s per run, {args.rounds} rounds; in each "
              "round every page runs on both offices back to back (order alternating)", flush=True)
        rates: dict[tuple[str, int], list[float]] = {}
        eff: dict[tuple[str, int], list[float]] = {}
        notes: dict[tuple[str, int], str] = {}
        for r in range(args.rounds):
            for name, (url, host, _) in PAGES.items():
                for online in ((0, n) if r % 2 == 0 else (n, 0)):
                    steal0, total0 = cpu_ticks()
                    rps, per_cpu, note = wrk(offices[online], url, host, args.seconds)
                    steal1, total1 = cpu_ticks()
                    steal = 100 * (steal1 - steal0) / max(1, total1 - total0)
                    print(f"  round {r + 1} {online:>6,} online  {name:9s} {rps:8.1f} req/s "
                          f"{per_cpu:8.1f} req/CPU-s  host steal {steal:4.1f} % {note}", flush=True)
                    rates.setdefault((name, online), []).append(rps)
                    eff.setdefault((name, online), []).append(per_cpu)
                    if note:
                        notes[(name, online)] = note

        def paired(a: tuple[str, int], b: tuple[str, int]) -> float:
            """Median over rounds of rate(a) / rate(b), the two measured in the same round, seconds
            apart: this VM's speed drifts over minutes (up to 1.5x with no steal), and a ratio of
            runs taken side by side cancels the drift that a ratio of bests does not."""
            return statistics.median(x / max(y, 1e-9) for x, y in zip(rates[a], rates[b]))

        print(f"\n| page | 0 online req/s (best, median) | {n:,} online req/s (best, median) | "
              f"ratio, paired median | ratio, best | ratio, cost (req/CPU-s, medians) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in PAGES:
            lo, hi = rates[(name, 0)], rates[(name, n)]
            cost = statistics.median(eff[(name, n)]) / max(statistics.median(eff[(name, 0)]), 1e-9)
            print(f"| {name} | {max(lo):,.0f}, {statistics.median(lo):,.0f} | {max(hi):,.0f}, {statistics.median(hi):,.0f} "
                  f"| **{paired((name, n), (name, 0)):.2f}** | {max(hi) / max(max(lo), 1e-9):.2f} | {cost:.2f} |")
        for online in (0, n):
            print(f"api-https / api-http at {online:,} online: paired median "
                  f"{paired(('api-https', online), ('api-http', online)):.2f}, best "
                  f"{max(rates[('api-https', online)]) / max(max(rates[('api-http', online)]), 1e-9):.2f}")
        for key, note in notes.items():
            print(f"note: {key[0]} at {key[1]:,} online: {note}")


if __name__ == "__main__":
    main()
