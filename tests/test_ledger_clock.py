"""Clock state from chrony: parsing, recording, and labelling times."""
from __future__ import annotations

from ledger.clock import ClockHistory, ClockSample, parse_tracking, read_chrony, record_clock
from ledger.db import open_ledger
from ledger_clock_util import Clock

SYNCED = "A29FC87B,162.159.200.123,3,1764230400.123456789,0.000012345,-0.000001,0.000020,-12.3,0.001,0.02,0.015,0.001,64.2,Normal\n"
UNSYNCED = "00000000,,0,0.000000000,0.000000000,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n"
FAR = "A29FC87B,162.159.200.123,3,1764230400.1,0.250000000,0.0,0.0,0.0,0.0,0.0,0.0,0.0,64.2,Normal\n"


def test_parse_tracking():
    s = parse_tracking(SYNCED)
    assert s.synced and s.offset_us == 12 and s.stratum == 3 and s.source == "162.159.200.123"
    assert not parse_tracking(UNSYNCED).synced
    bad = parse_tracking("garbage")
    assert not bad.synced and "unexpected chronyc output" in bad.error


def test_read_chrony_never_raises():
    s = read_chrony()
    assert isinstance(s, ClockSample)
    if not s.synced:
        assert s.error or s.leap  # says why


def test_labels_mark_unsynchronised_periods(tmp_path):
    clock = Clock(1_790_000_000_000)
    led = open_ledger(tmp_path / "l.sqlite", "skl-box", clock)
    t0 = clock.ms
    record_clock(led, parse_tracking(SYNCED))
    clock.ms += 60_000
    record_clock(led, parse_tracking(UNSYNCED))
    clock.ms += 60_000
    record_clock(led, parse_tracking(FAR))        # 250 ms off: beyond the 10 ms rule
    h = ClockHistory(led, t0 - 1000, t0 + 10 ** 7)
    assert h.label(t0 - 1) == "unknown"
    assert h.label(t0 + 30_000) == "synced"
    assert h.label(t0 + 90_000) == "unsynced"
    assert h.label(t0 + 150_000) == "unsynced"
    assert h.label(t0 + 3_600_000) == "unknown"   # no recent sample vouches for it
