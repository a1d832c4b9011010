"""IPv6 flows in the ledger: stored with the device's MAC, readable once sealed, `who` by IPv6
address names the person by MAC, and the CLI accepts an IPv6 address."""
from __future__ import annotations


import pytest

from ledger.db import open_ledger
from ledger.flows import FLAG_OPEN
from ledger.flows6 import flows6_at, ip6_bytes, stage6, who6
from ledger.records import Login, record_login
from ledger.seal import load_or_create_key, seal, verify
from ledger_clock_util import Clock

T0 = 1_790_000_000_000
PHONE = "2001:db8:1::2"
MAC = "36:a6:a2:17:a9:b6"


def row(ct, open_, start, end, sport, mac, src=PHONE):
    a = ip6_bytes(src)
    return (ct, open_, start, end, 6, a, sport, a, sport, ip6_bytes("2001:db8:2::2"), 443, 0 if open_ else 100,
            0 if open_ else 200, 0, mac)


@pytest.fixture
def led(tmp_path):
    clock = Clock(T0)
    ledger = open_ledger(tmp_path / "ledger.sqlite", "skl-box", clock)
    ledger.test_clock, ledger.test_key = clock, load_or_create_key(tmp_path)
    record_login(ledger, Login("line", "Uv6person", "คนไอพีหก", True, False, "2026-11", MAC, "10.77.0.2",
                               T0 + 3_600_000))
    yield ledger
    ledger.close()


def test_ipv6_flow_is_attributed_by_mac_once_sealed(led):
    led.test_clock.ms = T0 + 10_000
    stage6(led, [row(1, 1, T0 + 1000, None, 50000, MAC), row(2, 1, T0 + 2000, None, 50001, None)])
    assert who6(led, PHONE, 50000, T0 + 1500) == []  # not sealed yet: not readable
    seal(led, led.test_key)
    (a,) = who6(led, PHONE, 50000, T0 + 1500)
    assert a["flow"]["open"] and a["flow"]["mac"] == MAC and a["flow"]["src_ip"] == PHONE
    assert a["session"]["line_user_id"] == "Uv6person" and not a["may_be_incomplete"]
    from ledger.query import who
    assert who(led, PHONE, 50000, T0 + 1500) == [a]  # the one entry point answers IPv6 too
    # The DESTROY row came without a MAC: the NEW row's is used, and the flow is no longer open.
    stage6(led, [row(1, 0, T0 + 1000, T0 + 5000, 50000, None)])
    seal(led, led.test_key)
    (f,) = flows6_at(led, ip6_bytes(PHONE), 50000, T0 + 1500)
    assert not f["flags"] & FLAG_OPEN and f["mac"] == MAC and f["end_ms"] == T0 + 5000
    # A flow whose MAC was unknown has no person, and says so by session None.
    (b,) = who6(led, PHONE, 50001, T0 + 2500)
    assert b["flow"]["mac"] is None and b["session"] is None
    assert who6(led, "2001:db8:1::3", 50000, T0 + 1500) == []
    with pytest.raises(ValueError, match="not an IPv6 address"):
        who6(led, "10.0.0.1", 50000, T0)
    assert verify(led, led.test_key.public_key()).ok


def test_cli_who_accepts_an_ipv6_address(led, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from pathlib import Path
    from skillspot.cli import main
    stage6(led, [row(7, 0, T0 + 1000, T0 + 3000, 50007, MAC)])
    text = (Path(__file__).parent.parent / "examples" / "skillspot.toml").read_text(encoding="utf-8")
    cfg = tmp_path / "s.toml"
    cfg.write_text(text.replace('data_dir = "/var/lib/skillspot"', f'data_dir = "{tmp_path}"')
                   .replace('id = "dsd-bkk-01"', 'id = "skl-box"'))
    res = CliRunner().invoke(main, ["-c", str(cfg), "ledger", "who", "--ip", PHONE, "--port", "50007",
                                    "--at", str(T0 + 2000), "--admin", "tester"])
    assert res.exit_code == 0, res.output
    assert f"[{PHONE}]:50007 (MAC {MAC})" in res.output and "Uv6person" in res.output
    res = CliRunner().invoke(main, ["-c", str(cfg), "ledger", "who", "--ip", "2001:db8::zz", "--port", "1",
                                    "--at", str(T0), "--admin", "tester"])
    assert res.exit_code != 0 and "not an IPv6 address" in res.output
