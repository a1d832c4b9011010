"""RADIUS ledger tables, hostapd.conf rendering and the CLI's error paths (no network)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import accounting as acc
from ledger.db import LedgerError, open_ledger
from provisioning.hostapd import render_hostapd_conf
from radius.das import DisconnectResult, disconnect
from radius.policy import MacPolicy
from skillspot.cli import main
from base.config import HostapdConfig, RadiusConfig

REPO = Path(__file__).resolve().parents[1]


def record(**kw) -> acc.AcctRecord:
    base = dict(nas_address="127.0.0.1", nas_identifier="ap1", status_type=acc.STATUS_START,
                acct_session_id="S1", mac="3a:11:22:33:44:55", user_name="3a1122334455", called_station_id=None,
                framed_ip=None, input_octets=None, output_octets=None, input_packets=None, output_packets=None,
                session_time=None, terminate_cause=None, event_ms=1000, delay_time=0, dedupe_key="k1")
    base.update(kw)
    return acc.AcctRecord(**base)


@pytest.fixture
def ledger(tmp_path):
    opened = open_ledger(tmp_path / "l.sqlite", "skr-box", clock=lambda: 1_790_000_000.123)
    yield opened
    opened.close()


def test_radius_tables_are_append_only(ledger):
    acc.record_accounting(ledger, record())
    acc.record_auth_decision(ledger, acc.AuthDecision("127.0.0.1", "ap1", "3a:11:22:33:44:55", "3a1122334455",
                                                      None, "accept", "allowed", 60, 60))
    acc.record_disconnect(ledger, "3a:11:22:33:44:55", DisconnectResult(True, None, "ACK"))
    for table in ("radius_acct", "radius_auth", "radius_disconnects"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            ledger.db.conn.execute(f"UPDATE {table} SET at_ms = 0")
        with pytest.raises(sqlite3.IntegrityError, match="retention"):
            ledger.db.conn.execute(f"DELETE FROM {table}")
        row = next(ledger.db.query(f"SELECT at_ms, box_id FROM {table}"))
        assert row == {"at_ms": 1_790_000_000_123, "box_id": "skr-box"}


def test_duplicate_accounting_is_stored_once(ledger):
    assert acc.record_accounting(ledger, record()) is not None
    assert acc.record_accounting(ledger, record(delay_time=3)) is None
    assert len(acc.accounting_records(ledger)) == 1


def test_bad_records_are_refused_with_clear_errors(ledger):
    with pytest.raises(ValueError, match="accept"):
        acc.record_auth_decision(ledger, acc.AuthDecision("127.0.0.1", None, None, "x", None, "maybe", "?"))
    with pytest.raises(ValueError, match="dedupe_key"):
        acc.record_accounting(ledger, record(dedupe_key=""))
    with pytest.raises(LedgerError, match="radius_acct"):
        acc.record_accounting(ledger, record(status_type=None, dedupe_key="k9"))


def test_transaction_rolls_back_everything_on_failure(ledger):
    with pytest.raises(LedgerError):
        with acc.transaction(ledger):
            acc.record_accounting(ledger, record(dedupe_key="a"))
            acc.record_accounting(ledger, record(dedupe_key="b", status_type=None))
    assert acc.accounting_records(ledger) == []


def test_policy_decisions():
    policy = MacPolicy(RadiusConfig(block_list=["02-00-00-00-00-66"]))
    assert policy.decide("3a1122334455", "3a1122334455", "3A-11-22-33-44-55")[1].reason == "allowed"
    assert policy.decide("020000000066", "020000000066", None)[1].reason == "blocked"
    assert policy.decide("visitor", None, None) == (None, policy.decide("visitor", None, None)[1])
    assert policy.decide("visitor", None, None)[1].reason == "user-name-not-a-mac"
    assert policy.decide("3a1122334455", None, "garbage")[1].reason == "calling-station-id-not-a-mac"


def test_disconnect_refuses_a_bad_mac_and_reports_das_off():
    with pytest.raises(ValueError, match="not a MAC"):
        disconnect(RadiusConfig(das_secret="x" * 10), "nonsense")
    result = disconnect(RadiusConfig(das_secret=""), "3a:11:22:33:44:55")
    assert not result.acked and "das_secret is empty" in result.detail


# -- hostapd.conf --------------------------------------------------------------------------

def radius_cfg(**kw) -> RadiusConfig:
    return RadiusConfig(**{"clients": [{"address": "127.0.0.1", "secret": "s3cret-s3cret"}],
                           "das_secret": "das-s3cret", **kw})


def conf_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_rendered_hostapd_conf_has_the_keys_the_issue_asks_for():
    lines = conf_lines(render_hostapd_conf(HostapdConfig(channel=11, ssid="ฝึกอาชีพ WiFi"), radius_cfg(
        auth_port=11812, acct_port=11813, interim_interval_seconds=600, das_port=13799)))
    assert lines["country_code"] == "TH" and lines["channel"] == "11" and lines["macaddr_acl"] == "2"
    assert bytes.fromhex(lines["ssid2"]).decode() == "ฝึกอาชีพ WiFi"
    assert (lines["auth_server_addr"], lines["auth_server_port"], lines["auth_server_shared_secret"]) == \
        ("127.0.0.1", "11812", "s3cret-s3cret")
    assert (lines["acct_server_addr"], lines["acct_server_port"]) == ("127.0.0.1", "11813")
    assert lines["radius_acct_interim_interval"] == "600"
    assert lines["radius_das_port"] == "13799" and lines["radius_das_client"] == "127.0.0.1 das-s3cret"
    assert lines["wpa"] == "0" and "radius_require_message_authenticator" not in lines  # 2.10 would refuse it


def test_das_lines_are_left_out_without_a_secret():
    assert "radius_das_port" not in conf_lines(render_hostapd_conf(HostapdConfig(), radius_cfg(das_secret="")))


@pytest.mark.parametrize("hostapd, radius, words", [
    (HostapdConfig(ssid="ฝึกอาชีพฝึกอาชีพฝึกอาชีพ"), radius_cfg(), "bytes in UTF-8"),
    (HostapdConfig(own_ip_addr="10.0.0.9"), radius_cfg(), "no [[radius.clients]] entry"),
    (HostapdConfig(), RadiusConfig(clients=[{"address": "127.0.0.1", "secret": "abcdefgh\nwpa=1"}]), "control character"),
    (HostapdConfig(), radius_cfg(das_secret="has space in"), "space"),
    (HostapdConfig(), radius_cfg(das_secret="short"), "shorter than 8"),
])
def test_render_refuses_unsafe_or_inconsistent_config(hostapd, radius, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        render_hostapd_conf(hostapd, radius)


def test_render_refuses_a_bad_extra_key():
    with pytest.raises(ValueError, match="not a hostapd key"):
        render_hostapd_conf(HostapdConfig(), radius_cfg(), extra={"bad key": "1"})


# -- CLI -----------------------------------------------------------------------------------

def cli_config(tmp_path: Path, radius_section: str) -> Path:
    text = (REPO / "examples" / "skillspot.toml").read_text(encoding="utf-8").split("\n[radius]")[0]
    path = tmp_path / "c.toml"
    path.write_text(text.replace("/var/lib/skillspot", str(tmp_path / "data")) + "\n[radius]\n" + radius_section)
    return path


def test_cli_refuses_to_serve_without_clients(tmp_path):
    result = CliRunner().invoke(main, ["-c", str(cli_config(tmp_path, "auth_port = 28114\n")), "radius"])
    assert result.exit_code != 0 and "radius.clients" in result.output


def test_cli_reports_a_taken_port(tmp_path):
    import socket
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        cfg = cli_config(tmp_path, f'auth_port = {port}\n[[radius.clients]]\naddress = "127.0.0.1"\nsecret = "abcdefgh1"\n')
        result = CliRunner().invoke(main, ["-c", str(cfg), "radius"])
    finally:
        taken.close()
    assert result.exit_code != 0 and "cannot listen" in result.output


def test_cli_disconnect_refuses_a_bad_mac(tmp_path):
    cfg = cli_config(tmp_path, 'das_secret = "abcdefgh1"\n')
    result = CliRunner().invoke(main, ["-c", str(cfg), "radius", "disconnect", "zz:zz"])
    assert result.exit_code == 2 and "not a MAC" in result.output


def test_example_config_has_valid_radius_and_hostapd_sections():
    from base.config import load_config
    cfg = load_config(REPO / "examples" / "skillspot.toml")
    assert "macaddr_acl=2" in render_hostapd_conf(cfg.hostapd, cfg.radius)
