"""`GateClient`: the Gate protocol over the gate's Unix socket (stdlib only, cheap to import).

Every process but the gate holds one of these: the portal, the lease hook, RADIUS, the admin
pages and the CLI. A connection per call keeps it simple and safe across gunicorn's forks and
threads; a local connect costs tens of microseconds.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

from netcfg.gate import Authorisation, GateError, GateUnavailable


class GateClient:
    """Talk to `skillspot gate` at `path`."""

    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def _call(self, op: str, **args) -> object:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise GateUnavailable(f"the gate is not answering at {self.path} ({exc.strerror or exc}); "
                                      "fix: start it (skillspot gate, or systemctl start skillspot-gate)") from None
            try:
                sock.sendall(json.dumps({"op": op, **args}, separators=(",", ":")).encode() + b"\n")
                reader = sock.makefile("rb")
                line = reader.readline()
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
