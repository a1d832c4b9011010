"""The simulated internet's one web server: answers every host, including the OS probes.

Run inside the internet namespace:

    python -m simoffice.internet [--access-log FILE] [--log-zone ZONE] ADDRESS PORT [PORT...]

It answers each connectivity probe the way the real host does, so a phone that got through
the box sees exactly what it would see online. With `--access-log` it writes one line per
request as a real web server does: Apache's combined format with the client's source port
after its address (`%h %{remote}p %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"`), the
format RFC 6302 asks of servers behind which carrier NAT hides many users. That line is what
the police bring to an investigator ("who had public address A, port P, at time T?").
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from portal.probes import find_probe

INTERNET_BODY = b"Hello from the internet (skillspot simulated office)\n"

MAX_BYTES = 64 << 20  # /bytes/N: a download for bandwidth checks, bounded
CLF_TIME = "%d/%b/%Y:%H:%M:%S %z"  # Apache's %t, without the brackets

# One access-log line as written below (and as Apache writes it with the same LogFormat).
LINE_RE = re.compile(r'^(?P<ip>\S+) (?P<port>\d+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" '
                     r'(?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')


@dataclass(frozen=True)
class AccessLogLine:
    """One parsed access-log line: who connected (address, source port) and when."""

    ip: str
    port: int
    time: datetime          # aware, in the zone the line was written in
    request: str
    status: int

    @property
    def path(self) -> str:
        """The request's path (the middle word of "GET /path HTTP/1.1")."""
        parts = self.request.split(" ")
        return parts[1] if len(parts) == 3 else ""


def parse_access_line(text: str) -> AccessLogLine:
    """Parse one access-log line; ValueError naming the line if it is not in the format above."""
    m = LINE_RE.match(text.rstrip("\n"))
    if m is None:
        raise ValueError(f"not an access-log line in the combined-with-port format: {text[:200]!r}")
    return AccessLogLine(m["ip"], int(m["port"]), datetime.strptime(m["time"], CLF_TIME), m["request"],
                         int(m["status"]))


class AccessLog:
    """Appends one line per request, flushed at once (a crash loses no line), from any thread."""

    def __init__(self, path: Path, zone: str) -> None:
        self.zone = ZoneInfo(zone)
        self.lock = threading.Lock()
        self.fh: TextIO = open(path, "a", encoding="utf-8")

    def write(self, ip: str, port: int, at: float, request: str, status: int, size: int, referer: str,
              agent: str) -> None:
        """Record one request; `at` is when it arrived (Unix seconds), as Apache's %t is."""
        when = datetime.fromtimestamp(at, timezone.utc).astimezone(self.zone).strftime(CLF_TIME)
        clean = [s.replace('"', "%22").replace("\n", " ") or "-" for s in (request, referer, agent)]
        line = f'{ip} {port} - - [{when}] "{clean[0]}" {status} {size} "{clean[1]}" "{clean[2]}"\n'
        with self.lock:
            self.fh.write(line)
            self.fh.flush()


class Handler(BaseHTTPRequestHandler):
    server_version = "skillspot-internet/1"
    access_log: AccessLog | None = None   # set per server in main()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        arrived = time.time()
        path = self.path.split("?")[0]
        # Each OS's probe host answers as the real one does (the same table the portal uses).
        probe = find_probe(self.headers.get("Host", ""), path)
        if probe is not None:
            status, ctype, body, extra = probe.status, probe.content_type, probe.body, probe.headers
        elif path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= MAX_BYTES:
            status, ctype, body, extra = 200, "application/octet-stream", bytes(int(path[7:])), ()
        else:
            status, ctype, body, extra = 200, "text/plain", INTERNET_BODY, ()
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.access_log is not None:
            self.access_log.write(self.client_address[0], self.client_address[1], arrived, self.requestline, status,
                                  len(body), self.headers.get("Referer", ""), self.headers.get("User-Agent", ""))

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.client_address[0]}:{self.client_address[1]} {fmt % args}\n")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m simoffice.internet", description=__doc__.split("\n")[0])
    ap.add_argument("--access-log", type=Path, help="append one combined-format line (with source port) per request")
    ap.add_argument("--log-zone", default="Asia/Bangkok", help="time zone of the log's times (default: Asia/Bangkok)")
    ap.add_argument("address")
    ap.add_argument("ports", type=int, nargs="+")
    args = ap.parse_args(argv)
    handler = type("LoggingHandler", (Handler,), {"access_log": AccessLog(args.access_log, args.log_zone)}) \
        if args.access_log else Handler
    servers = [ThreadingHTTPServer((args.address, port), handler) for port in args.ports]
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
