"""What one DHCP event costs the box, and what `skillspot --help` costs, old way and new way,
interleaved in one run against the simulated office's real gate and ledger.

    sudo .venv/bin/python bench/lease_hook.py [--events 15]

    lease  old  `python -m skillspot.cli --config C lease-event add MAC IP HOST` (the hook dnsmasq
                ran before: the whole command, the config model, the ledger, the session layer)
           new  the rendered dhcp-script (provisioning/leasehook.py: a stdlib client of the gate)
    help   old  every package's click module imported first, as skillspot/cli.py did at start
           new  `python -m skillspot.cli --help` (commands imported when they run)

For each: wall time (median, p95), CPU time (user + system, median) and peak RSS (largest
maximum resident set, MB, from GNU time, package `time`) of the process. Goals: a lease event < 100 ms and < 30 MB; --help < 300 ms.
Each lease event is checked in the ledger afterwards. Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from base.config import load_config  # noqa: E402
from provisioning.dnsmasq import write_dnsmasq  # noqa: E402
from simoffice.office import Office  # noqa: E402

OLD_HELP = ("import importlib\nfrom skillspot.cli import PACKAGE_COMMANDS, main\n"
            "for module, attr, _ in PACKAGE_COMMANDS.values():\n    importlib.import_module(module)\n"
            "main(['--help'])\n")


def measure(argv: list[str], env: dict) -> tuple[float, float, float, str]:
    """(wall s, cpu s, peak RSS MB, stderr) of one process run to its end. Run under GNU time:
    a child forked from this (large) bench process would report the bench's RSS as its peak."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-o", stats.name, "-f", "%U %S %M", *argv],
                              stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=120)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
        user, system, max_kb = stats.read().split()[-3:]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)[:120]} failed ({proc.returncode}): {text[-800:]}")
    return wall, float(user) + float(system), int(max_kb) / 1024, text


def summary(label: str, runs: list[tuple[float, float, float, str]]) -> tuple[float, float]:
    walls = sorted(r[0] for r in runs)
    p95 = walls[min(len(walls) - 1, round(0.95 * (len(walls) - 1)))]
    cpu = statistics.median(r[1] for r in runs)
    rss = max(r[2] for r in runs)
    med = statistics.median(walls)
    print(f"  {label:10s} wall median {med * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms; "
          f"CPU {cpu * 1000:7.1f} ms; peak RSS {rss:6.1f} MB")
    return med, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=15, help="lease events each way, and --help runs (3 to 100)")
    args = ap.parse_args()
    if not 3 <= args.events <= 100:
        raise SystemExit("--events 3..100")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DNSMASQ_LEASE_EXPIRES": str(int(time.time()) + 3600)}
    runs: dict[str, list] = {"lease old": [], "lease new": [], "help old": [], "help new": []}
    with tempfile.TemporaryDirectory(prefix="skbench-lease-") as tmp, Office(workdir=Path(tmp)) as office:
        cfg = load_config(office.config_path)
        hook = write_dnsmasq(cfg, office.config_path, Path(tmp) / "hook").lease_hook
        old = [sys.executable, "-m", "skillspot.cli", "--config", str(office.config_path), "lease-event"]
        macs = []
        for i in range(args.events):
            for way in ("old", "new") if i % 2 == 0 else ("new", "old"):
                mac = f"02:5b:{0 if way == 'old' else 1:02x}:00:{i >> 8:02x}:{i & 255:02x}"
                ip = f"10.99.0.{200 + i % 50}"
                argv = [*old, "add", mac, ip, "bench"] if way == "old" else [str(hook), "add", mac, ip, "bench"]
                result = measure(argv, env)
                if way == "new" and "the long way" in result[3]:
                    raise SystemExit(f"the hook did not reach the gate: {result[3]}")
                runs[f"lease {way}"].append(result)
                macs.append(mac)
            for way in ("old", "new"):
                argv = ([sys.executable, "-c", OLD_HELP] if way == "old"
                        else [sys.executable, "-m", "skillspot.cli", "--help"])
                runs[f"help {way}"].append(measure(argv, env))
        import sqlite3
        with sqlite3.connect(office.data_dir / "ledger.sqlite") as db:
            recorded = {m for (m,) in db.execute("SELECT mac FROM leases WHERE hostname = 'bench'")}
        missing = set(macs) - recorded
        if missing:
            raise SystemExit(f"{len(missing)} lease events were not recorded: {sorted(missing)[:5]}")
    print(f"lease hook and CLI bench: {args.events} runs each way, interleaved; every event recorded in the ledger")
    lo, lo_rss = summary("lease old", runs["lease old"])
    ln, ln_rss = summary("lease new", runs["lease new"])
    ho, _ = summary("help old", runs["help old"])
    hn, _ = summary("help new", runs["help new"])
    print("\n| | old | new | new/old | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| lease event, wall (median) | {lo * 1000:.0f} ms | {ln * 1000:.0f} ms | {ln / lo:.2f} | < 100 ms: "
          f"{'met' if ln < 0.1 else 'NOT met'} |")
    print(f"| lease event, peak RSS | {lo_rss:.1f} MB | {ln_rss:.1f} MB | {ln_rss / lo_rss:.2f} | < 30 MB: "
          f"{'met' if ln_rss < 30 else 'NOT met'} |")
    print(f"| skillspot --help, wall (median) | {ho * 1000:.0f} ms | {hn * 1000:.0f} ms | {hn / ho:.2f} | < 300 ms: "
          f"{'met' if hn < 0.3 else 'NOT met'} |")


if __name__ == "__main__":
    main()
