"""Each check looks at one thing a visitor depends on and says what is wrong in one line.

Checks read the system (systemd, /proc, /sys, nft, chrony, the ledger); they change nothing.
Side effects sit behind `System`, so the checklist logic is tested without a box and the real
one runs inside the booted test container.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from base.config import Config


@dataclass(frozen=True)
class Result:
    """One line of the checklist. `ok` None means skipped (not part of this box)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{mark}  {self.name:<16} {self.detail}"


class System:
    """The real box: systemd, the kernel, chrony, the ledger."""

    def unit_state(self, unit: str) -> str:
        """systemctl is-active: active, inactive, failed, activating ... or 'no systemd'."""
        if shutil.which("systemctl") is None:
            return "no systemd"
        proc = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True, timeout=10)
        return (proc.stdout.strip() or proc.stderr.strip() or "unknown").splitlines()[0]

    def run(self, argv: list[str], timeout: float = 20) -> tuple[int, str]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 127, str(exc)
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def udp_listening(self, port: int) -> bool:
        """Something has UDP `port` bound (any address), from /proc/net/udp{,6}."""
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            text = self.read(table) or ""
            for line in text.splitlines()[1:]:
                local = line.split()[1]
                if int(local.rsplit(":", 1)[1], 16) == port:
                    return True
        return False

    def disk_percent(self, path: Path) -> float:
        usage = shutil.disk_usage(path)
        return 100.0 * usage.used / usage.total

    def tcp_connect(self, host: str, port: int, timeout: float) -> str | None:
        """None when a TCP connection opens, else why not."""
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return None
        except OSError as exc:
            return exc.strerror or str(exc)

    def chrony(self):
        from ledger.clock import read_chrony
        return read_chrony()

    def sync_status(self, ledger_path: Path, box_id: str) -> dict:
        """The ledger's sync progress (boxsync.status); raises LedgerError/OSError if unreadable."""
        if not ledger_path.exists():
            # open_ledger would create an empty one: a missing ledger is a finding, not a fix.
            raise FileNotFoundError(f"no ledger at {ledger_path}")
        import boxsync
        from ledger.db import open_ledger
        ledger = open_ledger(ledger_path, box_id)
        try:
            return boxsync.status(ledger)
        finally:
            ledger.close()


def skillspot_argv(config_path: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "skillspot.cli", "--config", config_path, *args]


def _unit(sys_: System, name: str, unit: str) -> Result:
    state = sys_.unit_state(unit)
    return Result(name, state == "active", f"{unit} {state}")


def run_checks(cfg: Config, config_path: str, commands: set[str], system: System | None = None) -> list[Result]:
    """Every check for this box's configuration, in the order a technician reads them.
    `commands` are the `skillspot` subcommands this build has (a gate or sync not built yet is skipped)."""
    s = system or System()
    out: list[Result] = []
    lan = cfg.network.lan_interface
    # LAN side: hostapd serving the SSID, or the wired LAN up.
    if cfg.radius.clients:
        state = s.unit_state("skillspot-hostapd.service")
        rc, status = s.run(["hostapd_cli", "-p", cfg.hostapd.ctrl_interface or "/run/hostapd",
                            "-i", cfg.hostapd.interface, "status"], timeout=5)
        enabled = rc == 0 and "state=ENABLED" in status
        out.append(Result("access point", state == "active" and enabled,
                          f"skillspot-hostapd.service {state}; hostapd on {cfg.hostapd.interface}: "
                          + ("ENABLED (beaconing)" if enabled else (status.splitlines() or ['no answer'])[0][:80])))
    else:
        oper = (s.read(f"/sys/class/net/{lan}/operstate") or "missing").strip()
        out.append(Result("wired LAN", oper in ("up", "unknown"), f"{lan} {oper}"))
    dnsmasq = s.unit_state("skillspot-dnsmasq.service")
    serving = s.udp_listening(67)
    out.append(Result("DHCP", dnsmasq == "active" and serving,
                      f"skillspot-dnsmasq.service {dnsmasq}; UDP 67 {'bound' if serving else 'not bound'}"))
    from netcfg.ruleset import FAMILY, TABLE
    rc, text = s.run(["nft", "list", "table", FAMILY, TABLE], timeout=10)
    out.append(Result("firewall", rc == 0, f"table {FAMILY} {TABLE} " + ("loaded" if rc == 0 else
                                                                       f"not loaded: {text[:100]}")))
    if "gate" in commands:
        out.append(_unit(s, "gate", "skillspot-gate.service"))
    else:
        out.append(Result("gate", None, "this build has no `skillspot gate` (the portal sets nft itself)"))
    out.append(_unit(s, "portal", "skillspot-portal.service"))
    if cfg.portal.tls_cert is not None:
        # One portal process serves HTTP and HTTPS: the HTTPS port must answer.
        ip, port = str(cfg.network.lan_address.ip), cfg.portal.https_port
        why = s.tcp_connect(ip, port, timeout=3)
        out.append(Result("portal (HTTPS)", why is None, f"{ip}:{port} " + ("answers" if why is None else why)))
    out.append(_unit(s, "RADIUS", "skillspot-radius.service"))
    out.append(_unit(s, "flow logger", "skillspot-flowlog.service"))
    clock = s.chrony()
    detail = (f"synchronised to {clock.source}, stratum {clock.stratum}, offset {clock.offset_us} us"
              if clock.synced else f"not synchronised: {clock.error or 'no selected source'}")
    out.append(Result("clock", bool(clock.synced), detail))
    out.extend(_centre(cfg, commands, s))
    limit = cfg.ledger.disk_alert_percent
    try:
        pct = s.disk_percent(cfg.box.data_dir)
        out.append(Result("disk", pct < limit, f"{cfg.box.data_dir} {pct:.0f}% used (alert at {limit}%)"))
    except OSError as exc:
        out.append(Result("disk", False, f"{cfg.box.data_dir}: {exc.strerror}"))
    rc, text = s.run(skillspot_argv(config_path, "ledger", "verify"), timeout=120)
    last = text.splitlines()[-1] if text else "no output"
    out.append(Result("ledger", rc == 0, last[:160]))
    return out


def _centre(cfg: Config, commands: set[str], s: System) -> list[Result]:
    if not cfg.central.url:
        return [Result("centre", None, "not configured (no [central] url): this box does not sync")]
    parts = urlsplit(cfg.central.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    why = s.tcp_connect(parts.hostname or "", port, timeout=5)
    results = [Result("centre", why is None, f"{parts.hostname}:{port} " + ("reachable" if why is None else f"unreachable: {why}"))]
    if "sync" in commands:
        results.append(_unit(s, "sync", "skillspot-sync.service"))
        results.append(_sync_lag(cfg, s))
    else:
        results.append(Result("sync", None, "this build has no `skillspot sync`: sync lag unknown"))
    return results


def _sync_lag(cfg: Config, s: System) -> Result:
    """How old the oldest row the centre has not acknowledged is, against [central] max_lag_seconds."""
    from ledger.db import LedgerError
    limit = cfg.central.max_lag_seconds
    try:
        st = s.sync_status(cfg.ledger_path, cfg.box.id)
    except (LedgerError, OSError) as exc:
        return Result("sync lag", False, f"cannot read the ledger's sync state: {exc}")
    lag = st["lag_ms"] / 1000
    waiting = st["unsent_rows"] + st["pending_rows"]
    detail = (f"{_duration(lag)} behind ({waiting} rows not acknowledged; acknowledged up to batch "
              f"{st['last_acked_seq']}; limit {_duration(limit)}, [central] max_lag_seconds)")
    return Result("sync lag", lag <= limit, detail)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def checklist(results: list[Result]) -> tuple[str, bool]:
    """The printed checklist and whether every check that ran passed."""
    ok = all(r.ok is not False for r in results)
    failed = sum(1 for r in results if r.ok is False)
    lines = [r.line() for r in results]
    lines.append(f"{'HEALTHY' if ok else 'UNHEALTHY'}: {failed} check(s) failed at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    return "\n".join(lines), ok

