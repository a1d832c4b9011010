"""The gate's socket takes a burst of portal connections at once: a client with a timeout gets
EAGAIN (not a wait) from a full Unix-socket backlog, which the portal shows as a 503."""
from __future__ import annotations

import socket

from netcfg.gated import GateServer


def test_a_burst_of_64_connections_is_queued_not_refused(tmp_path):
    path = tmp_path / "gate.sock"
    server = GateServer(path, service=None)  # not serving yet: every connection waits in the backlog
    clients = []
    try:
        for _ in range(64):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(2)  # as GateClient does; connect() must not fail with EAGAIN
            c.connect(str(path))
            clients.append(c)
        assert len(clients) == 64
    finally:
        for c in clients:
            c.close()
        server.server_close()
