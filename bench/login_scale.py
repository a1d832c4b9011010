"""Login cost against the number of devices online, side by side in one run.

A simulated office (simoffice) with the real gate, portal, dnsmasq and LINE sandbox. For each
N in --devices (ascending; devices are added to those already there), N other devices are made
online the way a box that restarted with them would hold them: N live login rows in the ledger
and N elements in the kernel's sets, then the gate restarts and rebuilds its index. Then:

  login  the phone logs in --logins times; each is timed from the LINE callback reaching the
         portal to the phone's first TCP connect through the box to the internet's web server,
         and the visitor logs out after each (so every login lets a held device in)
  gate   authorise + revoke pairs per second through the gate's socket (GateClient)

The baseline is N = 0 in the same run: the ratio p99(N) / p99(0) is printed for every N.

    sudo .venv/bin/python bench/login_scale.py [--devices 0,1000,10000,100000] [--logins 200]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.db import open_ledger  # noqa: E402
from ledger.records import Login, record_login  # noqa: E402
from netcfg.gateclient import GateClient  # noqa: E402
from simoffice.office import PORTAL_HOST, WEB_IP, Office  # noqa: E402

FAKE_NET = int(ipaddress.IPv4Address("10.100.0.0"))  # set keys only: nothing is ever sent to them


def fake(i: int) -> tuple[str, str]:
    """The MAC and address of fake device i."""
    mac = "02:fa:" + ":".join(f"{(i >> s) & 0xff:02x}" for s in (24, 16, 8, 0))
    return mac, str(ipaddress.IPv4Address(FAKE_NET + i))


def add_devices(office: Office, start: int, end: int, seconds: int = 7200) -> float:
    """Make fake devices start..end-1 online: ledger rows, kernel elements, gate restart.
    Returns the gate's restart time (index rebuilt from the kernel, reconciliation)."""
    if end <= start:
        return 0.0
    ledger = open_ledger(office.data_dir / "ledger.sqlite", "demo-office-01")
    expires = int((time.time() + seconds) * 1000)
    ledger.db.conn.execute("BEGIN")
    for i in range(start, end):
        mac, ip = fake(i)
        record_login(ledger, Login(method="line", line_user_id=f"Ubench{i}", display_name="bench", friend=None,
                                   friendship_changed=None, consent_version="2026-11", mac=mac, ip=ip,
                                   expires_ms=expires))
    ledger.db.conn.execute("COMMIT")
    ledger.close()
    gate = office.procs.pop("gate")
    os.killpg(gate.pid, signal.SIGTERM)
    gate.wait(timeout=30)
    batch = office.workdir / "fill.nft"
    with batch.open("w") as fh:
        for lo in range(start, end, 5000):
            keys = [" . ".join(fake(i)) for i in range(lo, min(end, lo + 5000))]
            fh.write("add element inet skillspot authorised { "
                     + ", ".join(f"{k} timeout {seconds}s" for k in keys) + " }\n")
            fh.write("add element inet skillspot active { " + ", ".join(keys) + " }\n")
            fh.write("add element inet skillspot authorised_mac6 { "
                     + ", ".join(f"{fake(i)[0]} timeout {seconds}s" for i in range(lo, min(end, lo + 5000))) + " }\n")
    office.run_in(office.box_ns, ["nft", "-f", str(batch)], timeout=600)
    t0 = time.perf_counter()
    office.start_gate(timeout=900)
    return time.perf_counter() - t0


def gate_ops(office: Office, pairs: int) -> float:
    """authorise + revoke pairs per second through the socket."""
    client = GateClient(office.gate_socket)
    t0 = time.perf_counter()
    for i in range(pairs):
        mac, ip = fake(900_000 + i)
        client.authorise(mac, ip, 60)
        client.revoke(mac)
    return pairs / (time.perf_counter() - t0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="0,1000,10000,100000")
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--gate-pairs", type=int, default=1000)
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, through the Office context manager, which cleans up.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    steps = sorted({int(x) for x in args.devices.split(",")})
    results = []
    with tempfile.TemporaryDirectory(prefix="skbench-login-") as tmp:
        # The production sweep interval: the sweeper reads the idle set every 10 s.
        with Office(workdir=Path(tmp), sweep_seconds=10) as office:
            office.phone_dhcp()
            have = 0
            for n in steps:
                restart = add_devices(office, have, n)
                have = n
                online = len(GateClient(office.gate_socket).authorised())
                run = office.phone("timed-logins", f"http://{PORTAL_HOST}:8080", str(args.logins), WEB_IP, "443",
                                   timeout=60 + args.logins * 5)
                ops = gate_ops(office, args.gate_pairs)
                ms = run["ms"]
                row = {"devices": n, "online_in_gate": online, "logins": len(ms), "failures": run["failures"],
                       "p50_ms": round(statistics.median(ms), 2) if ms else None,
                       "p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
                       "max_ms": round(max(ms), 2) if ms else None,
                       "gate_pairs_per_s": round(ops), "gate_restart_s": round(restart, 2)}
                results.append(row)
                print(json.dumps(row), flush=True)
    base = results[0]["p99_ms"]
    print("\ndevices  online  logins  p50 ms  p99 ms  p99/p99(0)  gate authorise+revoke/s  gate restart s")
    for r in results:
        ratio = r["p99_ms"] / base if base and r["p99_ms"] else float("nan")
        print(f"{r['devices']:>7}  {r['online_in_gate']:>6}  {r['logins']:>6}  {r['p50_ms']:>6}  {r['p99_ms']:>6}  "
              f"{ratio:>10.2f}  {r['gate_pairs_per_s']:>23}  {r['gate_restart_s']:>14}")


if __name__ == "__main__":
    main()
