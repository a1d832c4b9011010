"""Accounting throughput: our server (`skillspot radius`, each record committed to the SQLite
ledger before the answer) against Debian's FreeRADIUS 3.2 writing a detail file, fed the
same hostapd-shaped Accounting-Requests by radclient in one run.

    sudo .venv/bin/python bench/radius_acct.py [-n 20000] [--parallel 64]

Prints requests/s for each and the ratio ours / FreeRADIUS. Everything listens on
127.0.0.1 test ports; both servers are started here and stopped at the end. Not a test.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radius.hostapd_shapes import accounting_request, radclient_text  # noqa: E402

SECRET = "bench-secret-123"
FR_PORT, OURS_PORT, OURS_AUTH = 28213, 28223, 28222
MAX_N = 200_000


def packets(n: int) -> str:
    """n distinct Start/Interim/Stop requests for n/3 stations, as hostapd would send them."""
    out, t0 = [], 1_790_000_000
    for i in range(n):
        station, phase = divmod(i, 3)
        mac = f"3a:00:{(station >> 16) & 255:02x}:{(station >> 8) & 255:02x}:{station & 255:02x}:01"
        status = (1, 3, 2)[phase]
        extra = {} if status == 1 else dict(session_time=60 * phase, input_octets=1_000_000 * phase + station,
                                            output_octets=5_000_000 * phase, input_packets=900 * phase,
                                            output_packets=4000 * phase)
        if status == 2:
            extra["terminate_cause"] = 1
        out.append(radclient_text(accounting_request(
            status, mac=mac, session_id=f"{station:016X}", bssid="02:5a:00:00:00:01", ssid="DSD Free WiFi",
            nas_identifier="bench-ap1", event_timestamp=t0 + station + 60 * phase, **extra)))
    return "\n".join(out)


def wait_port(proc: subprocess.Popen, log: Path, marker: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if marker in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"server did not start within {timeout}s:\n{log.read_text()[-3000:]}")


def freeradius_dir(tmp: Path) -> Path:
    """A private copy of /etc/freeradius/3.0 with one accounting-only site writing detail."""
    raddb = tmp / "raddb"
    shutil.copytree("/etc/freeradius/3.0", raddb, symlinks=True)
    conf = (raddb / "radiusd.conf").read_text()
    conf = conf.replace("logdir = /var/log/freeradius", f"logdir = {tmp / 'frlog'}")
    conf = conf.replace("run_dir = ${localstatedir}/run/${name}", f"run_dir = {tmp / 'frrun'}")
    conf = conf.replace("\tuser = freerad", "\t#user = freerad").replace("\tgroup = freerad", "\t#group = freerad")
    (raddb / "radiusd.conf").write_text(conf)
    for d in ("frlog", "frrun"):
        (tmp / d).mkdir()
    (raddb / "clients.conf").write_text(f"client bench {{\n ipaddr = 127.0.0.1\n secret = {SECRET}\n}}\n")
    for link in (raddb / "sites-enabled").iterdir():
        link.unlink()
    for link in (raddb / "mods-enabled").iterdir():
        if link.name not in ("detail", "always"):
            link.unlink()
    (raddb / "sites-enabled" / "bench").write_text(f"""server bench {{
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {FR_PORT}
    }}
    preacct {{
    }}
    accounting {{
        detail
    }}
}}
""")
    return raddb


def ours_config(tmp: Path) -> Path:
    head = (REPO / "examples" / "skillspot.toml").read_text(encoding="utf-8").split("\n[radius]")[0]
    path = tmp / "skillspot.toml"
    path.write_text(head.replace("/var/lib/skillspot", str(tmp / "data")) + f"""
[radius]
auth_port = {OURS_AUTH}
acct_port = {OURS_PORT}

[[radius.clients]]
address = "127.0.0.1"
secret = "{SECRET}"
""")
    return path


def feed(pkt_file: Path, port: int, parallel: int) -> float:
    """Send every packet with radclient; returns the wall time. Fails if any is unanswered."""
    t0 = time.perf_counter()
    done = subprocess.run(["radclient", "-q", "-s", "-p", str(parallel), "-r", "5", "-t", "5", "-f", str(pkt_file),
                           f"127.0.0.1:{port}", "acct", SECRET], capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"radclient failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return elapsed


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help=f"requests per server (at most {MAX_N})")
    ap.add_argument("--parallel", type=int, default=64, help="radclient -p")
    ap.add_argument("--no-fsync", action="store_true", help="also measure ours with durable_sync = false")
    args = ap.parse_args()
    n = max(3, min(args.n, MAX_N))
    with tempfile.TemporaryDirectory(prefix="skr-bench-") as tmpname:
        tmp = Path(tmpname)
        pkt_file = tmp / "packets.txt"
        pkt_file.write_text(packets(n))
        results: dict[str, float] = {}

        raddb = freeradius_dir(tmp)
        check = subprocess.run(["freeradius", "-C", "-d", str(raddb)], capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise SystemExit(f"FreeRADIUS config check failed:\n{check.stdout[-3000:]}{check.stderr[-3000:]}")
        fr_log = tmp / "freeradius.log"
        with open(fr_log, "w") as fh:
            fr = subprocess.Popen(["freeradius", "-f", "-l", "stdout", "-d", str(raddb)], stdout=fh,
                                  stderr=subprocess.STDOUT)
        try:
            wait_port(fr, fr_log, "Ready to process requests")
            results["FreeRADIUS 3.2 (detail file)"] = n / feed(pkt_file, FR_PORT, args.parallel)
        finally:
            stop(fr)
        detail_records = sum(f.read_text().count("Acct-Status-Type") for f in (tmp / "frlog" / "radacct").rglob("detail-*"))

        variants = [("ours (SQLite, fsync per batch)", True)] + ([("ours (SQLite, no fsync)", False)] if args.no_fsync else [])
        stored = {}
        for label, durable in variants:
            cfg = ours_config(tmp)
            if not durable:
                cfg.write_text(cfg.read_text().replace("[radius]\n", "[radius]\ndurable_sync = false\n"))
            data = tmp / "data"
            shutil.rmtree(data, ignore_errors=True)
            log = tmp / "ours.log"
            with open(log, "w") as fh:
                ours = subprocess.Popen([sys.executable, "-m", "skillspot.cli", "-c", str(cfg), "radius"],
                                        stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
            try:
                wait_port(ours, log, "RADIUS listening")
                results[label] = n / feed(pkt_file, OURS_PORT, args.parallel)
            finally:
                stop(ours)
            with sqlite3.connect(data / "ledger.sqlite") as conn:
                stored[label] = conn.execute("SELECT COUNT(*) FROM radius_acct").fetchone()[0]

    print(f"{n} hostapd-shaped Accounting-Requests, radclient -p {args.parallel}, one machine, loopback")
    base = results["FreeRADIUS 3.2 (detail file)"]
    print(f"  {'FreeRADIUS 3.2 (detail file)':34} {base:9.0f} req/s   records in detail files: {detail_records}")
    for label, rate in results.items():
        if label.startswith("ours"):
            print(f"  {label:34} {rate:9.0f} req/s   rows stored: {stored[label]}   ratio ours/FreeRADIUS: {rate / base:.2f}")
    if detail_records != n or any(v != n for v in stored.values()):
        raise SystemExit("some requests were not stored: the numbers above are not valid")


if __name__ == "__main__":
    main()
