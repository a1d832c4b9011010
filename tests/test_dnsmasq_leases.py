"""dnsmasq's rendered configuration (checked by the real dnsmasq) and the lease hook."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.db import open_ledger
from ledger.records import rows
from provisioning.dnsmasq import check_dnsmasq, render_dnsmasq, write_dnsmasq, RenderError
from provisioning.leases import lease_event_from_dnsmasq
from base.config import load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "skillspot.toml"


@pytest.fixture
def config_file(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path / "data"}"')
    path = tmp_path / "skillspot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_rendered_dnsmasq_passes_dnsmasq_test(config_file, tmp_path):
    cfg = load_config(config_file)
    files = write_dnsmasq(cfg, config_file, tmp_path / "etc", captive_api_url="https://wifi.dsd.go.th:8443/api/captive")
    text = files.conf.read_text()
    assert "interface=wlan0" in text and "dhcp-range=10.99.0.50,10.99.0.250,3600" in text
    assert "nftset=/line.me/line-scdn.net/line-apps.com/lin.ee/line-cdn.net/4#inet#skillspot#walled_garden4" in text
    assert "host-record=wifi.dsd.go.th,10.99.0.1" in text
    assert 'dhcp-option-force=114,"https://wifi.dsd.go.th:8443/api/captive"' in text
    assert f"dhcp-script={files.lease_hook}" in text
    assert os.access(files.lease_hook, os.X_OK)


def test_a_broken_dnsmasq_file_is_caught(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("dhcp-range=not-an-address\n")
    with pytest.raises(RenderError, match="dnsmasq rejected"):
        check_dnsmasq(conf)


def test_lease_event_parsing():
    add = lease_event_from_dnsmasq(["add", "AA-BB-CC-DD-EE-FF", "10.99.0.60", "phone"],
                                   {"DNSMASQ_LEASE_EXPIRES": "1800000000"}, now_ms=0)
    assert (add.event, add.mac, add.ip, add.hostname, add.expires_ms) == (
        "add", "aa:bb:cc:dd:ee:ff", "10.99.0.60", "phone", 1_800_000_000_000)
    old = lease_event_from_dnsmasq(["old", "aa:bb:cc:dd:ee:ff", "10.99.0.60"], {"DNSMASQ_LEASE_LENGTH": "600"}, now_ms=1000)
    assert old.expires_ms == 601_000 and old.hostname is None
    gone = lease_event_from_dnsmasq(["del", "aa:bb:cc:dd:ee:ff", "10.99.0.60"], {"DNSMASQ_LEASE_EXPIRES": "5"}, now_ms=0)
    assert gone.expires_ms is None
    with pytest.raises(ValueError):
        lease_event_from_dnsmasq(["add", "not-a-mac", "10.99.0.60"], {}, now_ms=0)


def run_hook(hook: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(hook), *args], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def test_the_lease_hook_records_every_event(config_file, tmp_path):
    cfg = load_config(config_file)
    files = write_dnsmasq(cfg, config_file, tmp_path / "etc")
    mac, ip = "02:00:00:00:00:01", "10.99.0.61"
    assert run_hook(files.lease_hook, "add", mac, ip, "phone", env={"DNSMASQ_LEASE_EXPIRES": "1800000000"}).returncode == 0
    assert run_hook(files.lease_hook, "old", mac, ip, "phone", env={"DNSMASQ_LEASE_EXPIRES": "1800000600"}).returncode == 0
    assert run_hook(files.lease_hook, "del", mac, ip, "phone").returncode == 0
    assert run_hook(files.lease_hook, "tftp", "123", "10.99.0.61", "/x").returncode == 0  # not a lease: ignored
    ledger = open_ledger(cfg.ledger_path, cfg.box.id)
    got = [(r["event"], r["mac"], r["ip"], r["hostname"], r["expires_ms"]) for r in rows(ledger, "leases")]
    assert got == [("add", mac, ip, "phone", 1_800_000_000_000), ("old", mac, ip, "phone", 1_800_000_600_000),
                   ("del", mac, ip, "phone", None)]


def test_an_unwritable_ledger_spools_the_event(config_file, tmp_path):
    cfg = load_config(config_file)
    files = write_dnsmasq(cfg, config_file, tmp_path / "etc")
    cfg.box.data_dir.mkdir(parents=True, exist_ok=True)
    cfg.ledger_path.mkdir()  # a directory where the database file should be: SQLite cannot open it
    proc = run_hook(files.lease_hook, "add", "02:00:00:00:00:02", "10.99.0.62", "phone")
    assert proc.returncode == 1 and "spooled" in proc.stderr
    assert "add 02:00:00:00:00:02 10.99.0.62 phone" in (cfg.box.data_dir / "lease-spool.log").read_text()


def test_a_malformed_call_is_refused_clearly(config_file, tmp_path):
    cfg = load_config(config_file)
    files = write_dnsmasq(cfg, config_file, tmp_path / "etc")
    proc = run_hook(files.lease_hook, "add", "zz", "10.99.0.63")
    assert proc.returncode != 0 and "lease event ignored: not a MAC address" in proc.stderr
