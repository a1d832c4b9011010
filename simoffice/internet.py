"""The simulated internet's one web server: answers every host, including the OS probes.

Run inside the internet namespace: `python -m simoffice.internet ADDRESS PORT [PORT...]`.
It answers each connectivity probe the way the real host does, so a phone that got through
the box sees exactly what it would see online.
"""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from portal.probes import find_probe

INTERNET_BODY = b"Hello from the internet (skillspot simulated office)\n"

MAX_BYTES = 64 << 20  # /bytes/N: a download for bandwidth checks, bounded


class Handler(BaseHTTPRequestHandler):
    server_version = "skillspot-internet/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
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

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.client_address[0]}:{self.client_address[1]} {fmt % args}\n")


def main(argv: list[str]) -> None:
    address, ports = argv[0], [int(p) for p in argv[1:]]
    servers = [ThreadingHTTPServer((address, port), Handler) for port in ports]
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
