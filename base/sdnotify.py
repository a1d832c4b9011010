"""systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

Written here rather than taken from a library: the protocol is a single datagram send (see
sd_notify(3)); the PyPI `sdnotify` package is unmaintained since 2017 and python3-systemd
would add a C extension to the box for these few lines.
"""
from __future__ import annotations

import os
import socket
from typing import Mapping


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd `state` (e.g. "READY=1"); False when not run by systemd with NotifyAccess.

    Raises OSError if the socket is named but cannot be reached (systemd is not listening):
    a unit of Type=notify would then never start, and the caller should say so."""
    addr = environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):          # abstract namespace socket
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(addr)
        sock.sendall(state.encode())
    return True
