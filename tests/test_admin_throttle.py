"""Failed admin logins are slowed per source and per name, and the count is shared by every
gunicorn worker (one SQLite file) and survives a restart (issue 16, item 5)."""
from __future__ import annotations

from portal.throttle import FREE_FAILURES, MAX_DELAY_SECONDS, LoginThrottle, delay_after


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_delay_doubles_after_the_free_failures_and_is_capped():
    assert [delay_after(n) for n in range(FREE_FAILURES)] == [0.0] * FREE_FAILURES
    assert [delay_after(FREE_FAILURES + i) for i in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert delay_after(FREE_FAILURES + 40) == MAX_DELAY_SECONDS


def test_workers_share_the_count_and_a_restart_keeps_it(tmp_path):
    clock = Clock()
    path = tmp_path / "throttle.sqlite"
    worker_a, worker_b = LoginThrottle(path, clock), LoginThrottle(path, clock)
    keys = LoginThrottle.keys("192.0.2.7", "somsak")
    for i in range(FREE_FAILURES + 3):
        (worker_a if i % 2 else worker_b).failed(keys)
    assert worker_a.wait_seconds(keys) == 8.0
    restarted = LoginThrottle(path, clock)
    assert restarted.wait_seconds(keys) == 8.0
    clock.now += 8.0
    assert restarted.wait_seconds(keys) == 0.0


def test_per_name_holds_a_guesser_with_many_addresses_and_success_clears(tmp_path):
    clock = Clock()
    t = LoginThrottle(tmp_path / "t.sqlite", clock)
    for i in range(FREE_FAILURES + 1):
        t.failed(LoginThrottle.keys(f"192.0.2.{i}", "Somsak"))
    assert t.wait_seconds(LoginThrottle.keys("192.0.2.99", "somsak")) == 2.0  # a fresh address, same name
    assert t.wait_seconds(LoginThrottle.keys("192.0.2.99", "malee")) == 0.0
    t.succeeded(LoginThrottle.keys("192.0.2.99", "somsak"))
    assert t.wait_seconds(LoginThrottle.keys("192.0.2.99", "somsak")) == 0.0


def test_failures_older_than_the_window_start_again(tmp_path):
    clock = Clock()
    t = LoginThrottle(tmp_path / "t.sqlite", clock)
    keys = LoginThrottle.keys("192.0.2.7", "somsak")
    for _ in range(FREE_FAILURES + 2):
        t.failed(keys)
    clock.now += 2 * 3600
    assert t.wait_seconds(keys) == 0.0
    t.failed(keys)
    assert t.wait_seconds(keys) == 0.0  # one failure in the new window


def test_old_counts_are_forgotten(tmp_path):
    clock = Clock()
    t = LoginThrottle(tmp_path / "t.sqlite", clock)
    for i in range(50):
        t.failed(LoginThrottle.keys("192.0.2.7", f"made-up-{i}"))
    clock.now += 2 * 3600
    t.failed(LoginThrottle.keys("192.0.2.8", "somsak"))
    count = t._conn.execute("SELECT COUNT(*) FROM admin_login_failures").fetchone()[0]
    assert count == 2  # only the new source and name
