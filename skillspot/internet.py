"""The simulated internet's one web server: answers every host, including the OS probes.

Run inside the internet namespace: `python -m skillspot.internet ADDRESS PORT [PORT...]`.
It answers each connectivity probe the way the real host does, so a phone that got through
the box sees exactly what it would see online.
"""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INTERNET_BODY = b"Hello from the internet (skillspot simulated office)\n"

# path -> (status, content type, body) as the real probe servers answer
PROBE_ANSWERS = {
    "/generate_204": (204, "text/plain", b""),
    "/gen_204": (204, "text/plain", b""),
    "/hotspot-detect.html": (200, "text/html", b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"),
    "/connecttest.txt": (200, "text/plain", b"Microsoft Connect Test"),
    "/ncsi.txt": (200, "text/plain", b"Microsoft NCSI"),
    "/success.txt": (200, "text/plain", b"success\n"),
    "/canonical.html": (200, "text/html", b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'),
}


class Handler(BaseHTTPRequestHandler):
    server_version = "skillspot-internet/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, ctype, body = PROBE_ANSWERS.get(self.path.split("?")[0], (200, "text/plain", INTERNET_BODY))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
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
