"""`skillspot health`'s checklist logic against a described system (the real one runs in the
booted container of tests/test_field_install.py)."""
from __future__ import annotations

from pathlib import Path

from base.config import load_config
from health.checks import System, checklist, run_checks
from ledger.clock import ClockSample

REPO = Path(__file__).resolve().parent.parent


class Described(System):
    """A box described by a few facts; everything else is healthy."""

    def __init__(self, down: set[str] = frozenset(), synced: bool = True, disk: float = 40.0,
                 nft_rc: int = 0, verify_rc: int = 0, hostapd: str = "state=ENABLED") -> None:
        self.down, self.synced, self.disk, self.nft_rc, self.verify_rc, self.hostapd = (
            down, synced, disk, nft_rc, verify_rc, hostapd)

    def unit_state(self, unit: str) -> str:
        return "failed" if unit in self.down else "active"

    def run(self, argv, timeout=20):
        if argv[0] == "hostapd_cli":
            return 0, self.hostapd
        if argv[0] == "nft":
            return self.nft_rc, "" if self.nft_rc == 0 else "Error: No such file or directory"
        if "verify" in argv:
            return self.verify_rc, "OK: 1 seals" if self.verify_rc == 0 else "TAMPERED: row 3\nFAILED: 1 seals"
        raise AssertionError(argv)

    def udp_listening(self, port: int) -> bool:
        return "skillspot-dnsmasq.service" not in self.down

    def disk_percent(self, path) -> float:
        return self.disk

    def tcp_connect(self, host, port, timeout):
        return None

    def chrony(self):
        return ClockSample(self.synced, 12, 2, "192.0.2.1", "Normal", None if self.synced else "no source")


def results(tmp_path, commands=frozenset({"gate"}), **facts):
    cfg = load_config(REPO / "examples" / "skillspot.toml")
    return checklist(run_checks(cfg, str(tmp_path / "x.toml"), set(commands), Described(**facts)))


def test_healthy_box_passes_every_check(tmp_path):
    text, ok = results(tmp_path)
    assert ok, text
    assert "FAIL" not in text and text.splitlines()[-1].startswith("HEALTHY")
    for name in ("access point", "DHCP", "firewall", "gate", "portal", "RADIUS", "flow logger", "clock", "disk", "ledger"):
        assert any(line.startswith("PASS") and f" {name} " in line for line in text.splitlines()), name


def test_each_failure_is_named_and_fails_the_whole(tmp_path):
    cases = {
        "gate": dict(down={"skillspot-gate.service"}),
        "flow logger": dict(down={"skillspot-flowlog.service"}),
        "DHCP": dict(down={"skillspot-dnsmasq.service"}),
        "access point": dict(hostapd="state=DISABLED"),
        "clock": dict(synced=False),
        "disk": dict(disk=95.0),
        "firewall": dict(nft_rc=1),
        "ledger": dict(verify_rc=1),
    }
    for name, facts in cases.items():
        text, ok = results(tmp_path, **facts)
        assert not ok, name
        failed = [line for line in text.splitlines() if line.startswith("FAIL")]
        assert len(failed) == 1 and f" {name} " in failed[0], (name, text)


def test_a_command_this_build_lacks_is_skipped_not_failed(tmp_path):
    text, ok = results(tmp_path, commands=set(), down={"skillspot-gate.service"})
    assert ok and any(line.startswith("SKIP") and " gate " in line for line in text.splitlines())
