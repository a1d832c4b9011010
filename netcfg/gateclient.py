"""`GateClient`: the Gate protocol over the gate's Unix socket (stdlib only, cheap to import).

Every process but the gate holds one of these: the portal, the lease hook, RADIUS, the admin
pages and the CLI. Questions (list, mac_for_ip, health) go over one kept-open connection per
thread: the portal asks on every intercepted request, and a connection per question cost the
gate a new thread each time. Changes (authorise, revoke) open a connection of their own, so a
change is never sent down a connection the gate may have closed (a retry could not tell whether
the first attempt took effect).
"""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

from netcfg.gate import Authorisation, GateError, GateUnavailable


QUESTIONS = frozenset({"list", "mac_for_ip", "health"})  # change nothing: safe to ask again


class GateClient:
    """Talk to `skillspot gate` at `path`."""

    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._kept = threading.local()  # this thread's open connection for questions, and its pid

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise GateUnavailable(f"the gate is not answering at {self.path} ({exc.strerror or exc}); "
                                  "fix: start it (skillspot gate, or systemctl start skillspot-gate)") from None
        return sock

    @staticmethod
    def _exchange(sock: socket.socket, reader, op: str, args: dict) -> bytes:
        sock.sendall(json.dumps({"op": op, **args}, separators=(",", ":")).encode() + b"\n")
        return reader.readline()

    def _ask(self, op: str, args: dict) -> bytes:
        """A question over this thread's kept connection. A connection the gate closed since the
        last question (a gate restart) is replaced once: asking again changes nothing."""
        kept = getattr(self._kept, "conn", None)
        if kept is not None and kept[0] != os.getpid():  # inherited across a fork: not ours to use
            kept = None
        may_retry = kept is not None  # only an old connection can have been closed under us
        while True:
            if kept is None:
                sock = self._connect()
                kept = self._kept.conn = (os.getpid(), sock, sock.makefile("rb"))
            try:
                line, error = self._exchange(kept[1], kept[2], op, args), None
            except OSError as exc:
                line, error = b"", exc
            if line:
                return line
            self._drop()
            if not may_retry:
                detail = f" ({error.strerror or error})" if error else ""
                raise GateUnavailable(f"the gate at {self.path} stopped answering during {op}{detail}")
            kept, may_retry = None, False

    def _drop(self) -> None:
        kept = getattr(self._kept, "conn", None)
        self._kept.conn = None
        if kept is not None and kept[0] == os.getpid():
            kept[2].close()
            kept[1].close()

    def close(self) -> None:
        """Close this thread's kept connection (others close when their thread ends)."""
        self._drop()

    def _call(self, op: str, **args) -> object:
        if op in QUESTIONS:
            line = self._ask(op, args)
        else:
            sock = self._connect()
            try:
                try:
                    line = self._exchange(sock, sock.makefile("rb"), op, args)
                except OSError as exc:
                    raise GateUnavailable(f"the gate at {self.path} stopped answering during {op} "
                                          f"({exc.strerror or exc}); it may or may not have done it") from None
            finally:
                sock.close()
            if not line:
                raise GateUnavailable(f"the gate at {self.path} closed the connection during {op}; "
                                      "it may or may not have done it")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise GateError(f"the gate refused {op}: {answer.get('error')}")
        return answer.get("result")

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        """Let (mac, ip) through for `seconds`."""
        self._call("authorise", mac=mac, ip=ip, seconds=seconds)

    def revoke(self, mac: str) -> list[str]:
        """Shut `mac` out now; the addresses it had."""
        return list(self._call("revoke", mac=mac))

    def authorised(self, mac: str | None = None, ip: str | None = None) -> list[Authorisation]:
        """Devices let through now, optionally only one MAC's or one address's."""
        args = {k: v for k, v in (("mac", mac), ("ip", ip)) if v is not None}
        return [Authorisation(**a) for a in self._call("list", **args)]

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC behind `ip`, from the box's neighbour table."""
        return self._call("mac_for_ip", ip=ip)

    def health(self) -> dict:
        """The gate's own health."""
        return dict(self._call("health"))
