"""base.sdnotify against real datagram sockets, as systemd listens (path and abstract)."""
from __future__ import annotations

import os
import socket

import pytest

from base.sdnotify import notify


def _listener(addr: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(5)
    return sock


def test_ready_reaches_a_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        assert notify("READY=1", {"NOTIFY_SOCKET": path}) is True
        assert sock.recv(100) == b"READY=1"


def test_ready_reaches_an_abstract_socket():
    name = f"skillspot-test-{os.getpid()}-{os.urandom(4).hex()}"
    with _listener("\0" + name) as sock:
        assert notify("READY=1\nSTATUS=recording", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1\nSTATUS=recording"


def test_without_systemd_nothing_is_sent_and_a_dead_socket_is_an_error(tmp_path):
    assert notify("READY=1", {}) is False
    with pytest.raises(OSError):
        notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
