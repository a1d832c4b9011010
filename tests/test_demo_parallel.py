"""Two `skillspot demo` runs at once, while the rest of the suite runs, on one host: every run
names its own namespaces, interfaces, gate socket and files. And a failure to build the office
is one line that says what to do, never a traceback."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simoffice.office import Office, OfficeError

pytestmark = pytest.mark.netns


def test_two_demos_at_once_both_pass_and_leave_nothing_behind(tmp_path):
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    runs = [subprocess.Popen([sys.executable, "-m", "skillspot.cli", "demo", "--workdir", str(tmp_path / f"demo{i}")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out[-3000:]
        assert "The visitor is online and the box has recorded it." in out
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    # Other tests may have made namespaces meanwhile; none of the demos' may remain.
    demo_ns = {ns for out in outputs for ns in re.search(r"creating namespaces (\S+), (\S+) and (\S+)", out).groups()}
    assert len(demo_ns) == 6, "each run named its own three namespaces"
    assert not (after - before) & demo_ns


def test_a_failure_to_build_the_office_is_one_line_with_a_fix(tmp_path):
    office = Office(workdir=tmp_path / "office")
    # Something on the host is in the way: a file where the box's resolver directory goes.
    blocker = Path("/etc/netns") / office.box_ns
    blocker.parent.mkdir(exist_ok=True)
    blocker.write_text("not a directory")
    try:
        started = time.monotonic()
        with pytest.raises(OfficeError) as err:
            with office:
                pass
        message = str(err.value)
        assert "\n" not in message and "Traceback" not in message
        assert "building the office failed" in message and "Fix:" in message
        assert time.monotonic() - started < 60
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert office.box_ns not in listed and office.phone_ns not in listed  # cleaned up after the failure
    finally:
        blocker.unlink()
    with pytest.raises(OfficeError, match="1 to 11 letters"):
        with Office(workdir=tmp_path / "bad", prefix="no-dashes!"):
            pass
