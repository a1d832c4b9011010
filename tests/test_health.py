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


def central_config(tmp_path, url: str = "http://127.0.0.1:9", extra: str = "", box_id: str = "health-box"):
    """The example configuration with a centre, its own data dir and [central] `extra` keys."""
    import tomllib
    text = (REPO / "examples" / "skillspot.toml").read_text()
    ex = tomllib.loads(text)
    text = text.replace(f'id = "{ex["box"]["id"]}"', f'id = "{box_id}"')
    text = text.replace(f'data_dir = "{ex["box"]["data_dir"]}"', f'data_dir = "{tmp_path / "data"}"')
    text = text.split("\n[central]\n", 1)[0] + f'\n[central]\nurl = "{url}"\n{extra}\n'
    path = tmp_path / "box.toml"
    path.write_text(text)
    return load_config(path)


def lag_line(cfg, tmp_path) -> tuple[str, bool]:
    text, ok = checklist(run_checks(cfg, str(tmp_path / "box.toml"), {"gate", "sync"}, Described()))
    lines = [line for line in text.splitlines() if " sync lag " in line]
    assert len(lines) == 1, text
    return lines[0], ok


def test_no_centre_passes_and_says_not_configured(tmp_path):
    text, ok = results(tmp_path, commands={"gate", "sync"})
    assert ok, text
    assert any(line.startswith("SKIP") and " centre " in line and "not configured" in line
               for line in text.splitlines()), text
    assert " sync lag " not in text


def test_sync_lag_from_a_real_ledger_against_the_configured_limit(tmp_path):
    from ledger.db import open_ledger
    from ledger.records import log_event
    from ledger.sync import form_batch, record_ack
    now = __import__("time").time()
    cfg = central_config(tmp_path, extra="max_lag_seconds = 900")
    # Nothing recorded yet: no lag.
    ledger = open_ledger(cfg.ledger_path, cfg.box.id, clock=lambda: now - 600)
    line, ok = lag_line(cfg, tmp_path)
    assert ok and line.startswith("PASS") and "0 s behind" in line, line
    # A row ten minutes old that the centre has not acknowledged: within 15 min, beyond 5 min.
    log_event(ledger, "test", "lag")
    line, ok = lag_line(cfg, tmp_path)
    assert ok and line.startswith("PASS") and "10 min behind (1 rows" in line and "limit 15 min" in line, line
    tight = central_config(tmp_path, extra="max_lag_seconds = 300")
    line, ok = lag_line(tight, tmp_path)
    assert not ok and line.startswith("FAIL") and "10 min behind" in line and "max_lag_seconds" in line, line
    # Sent but not acknowledged still counts; acknowledged does not.
    batch = form_batch(ledger, 1000)
    line, ok = lag_line(tight, tmp_path)
    assert not ok and "10 min behind" in line, line
    record_ack(ledger, batch.seq, "receipt", None)
    line, ok = lag_line(tight, tmp_path)
    assert ok and line.startswith("PASS") and "0 s behind (0 rows" in line and "batch 1" in line, line
    ledger.close()


def test_sync_lag_fails_without_a_ledger_and_creates_none(tmp_path):
    cfg = central_config(tmp_path)
    line, ok = lag_line(cfg, tmp_path)
    assert not ok and line.startswith("FAIL") and "no ledger at" in line, line
    assert not cfg.ledger_path.exists()


def test_max_lag_seconds_is_validated_with_the_key_named(tmp_path):
    import pytest
    from base.config import ConfigError
    with pytest.raises(ConfigError, match=r"central\.max_lag_seconds"):
        central_config(tmp_path, extra="max_lag_seconds = 5")
    assert central_config(tmp_path).central.max_lag_seconds == 3600
