"""The simulated internet's access log: the line the police bring to an investigator. Written as
Apache writes `%h %{remote}p %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"`, parsed back
exactly, and a line in another format is refused naming it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from simoffice.internet import AccessLog, parse_access_line

AT = 1_796_342_400.25  # 2026-12-04 00:00:00.25 UTC


def test_a_line_has_the_client_address_port_and_time_in_the_log_zone(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(path, "Asia/Bangkok")
    log.write("198.51.100.2", 50123, AT, 'GET /jobs?q="x" HTTP/1.1', 200, 53, "", 'Mozilla/5.0 "quoted"')
    log.write("198.51.100.2", 50124, AT + 1, "GET / HTTP/1.1", 404, 0, "http://a.example/", "curl/8")
    first, second = path.read_text(encoding="utf-8").splitlines()
    assert first.startswith("198.51.100.2 50123 - - [04/Dec/2026:07:00:00 +0700] ")
    line = parse_access_line(first)
    assert (line.ip, line.port, line.status, line.path) == ("198.51.100.2", 50123, 200, "/jobs?q=%22x%22")
    # Seconds, as a web server writes them: the moment falls in that second, in Bangkok time.
    assert line.time.utcoffset() == timedelta(hours=7)
    assert line.time == datetime(2026, 12, 4, 0, 0, 0, tzinfo=timezone.utc)
    assert parse_access_line(second).port == 50124


def test_a_line_in_another_format_is_refused_naming_it():
    with pytest.raises(ValueError, match="not an access-log line.*GET /"):
        parse_access_line('198.51.100.2 - - [04/Dec/2026:07:00:00 +0700] "GET / HTTP/1.1" 200 53 "-" "curl"')
