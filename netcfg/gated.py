"""`skillspot gate`: the one process that changes the nft sets, serving the Gate protocol on a
Unix socket.

Why one process: the web-facing portal needs no CAP_NET_ADMIN, set changes never race, and
the gate keeps an in-memory index of what it let through, rebuilt from the kernel at start, so
a login is one netlink transaction and no set dump, whatever the number of devices online.

Wire protocol (JSON lines; one request per line, one answer per line, any number per
connection):

  {"op": "authorise", "mac": M, "ip": A, "seconds": S}  -> {"ok": true, "result": null}
  {"op": "revoke", "mac": M}                            -> {"ok": true, "result": ["10.99.0.5"]}
  {"op": "list", "mac": M?, "ip": A?}                   -> {"ok": true, "result": [{mac, ip, timeout, expires}]}
  {"op": "mac_for_ip", "ip": A}                         -> {"ok": true, "result": "aa:..." | null}
  {"op": "health"}                                      -> {"ok": true, "result": {...}}
  anything wrong                                        -> {"ok": false, "error": "one line"}

Who may ask is decided by the socket's file mode and group (config [gate]).
"""
from __future__ import annotations

import grp
import ipaddress
import json
import logging
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from base.addr import normalise_mac
from base.faults import fault
from netcfg.gate import Authorisation, GateError

log = logging.getLogger("skillspot.gate")

MAX_REQUEST = 64 * 1024
MAX_SECONDS = 7 * 86400


@dataclass(frozen=True)
class Entry:
    """What the gate let through for one MAC (monotonic clock times)."""

    ip: str
    timeout: int
    until: float
    since: float


class GateService:
    """The index of authorised devices and the kernel writer behind it.

    `sets` is a netcfg.nft.NftSets (or anything with `change` and `dump`); the index answers
    every read, the kernel gets one transaction per change. A lock serialises changes, so the
    index and the kernel move together.
    """

    def __init__(self, sets, mac_for_ip: Callable[[str], str | None], clock: Callable[[], float] = time.monotonic) -> None:
        self._sets = sets
        self._mac_for_ip = mac_for_ip
        self._clock = clock
        self._lock = threading.Lock()
        self._by_mac: dict[str, Entry] = {}
        self._by_ip: dict[str, set[str]] = {}
        self.started = time.time()
        self.last_sweep: float | None = None
        self.last_idle_read: float | None = None  # wall time the sweeper last read the idle sets
        self.changes = 0

    # -- index ----------------------------------------------------------------------

    def load(self, state) -> int:
        """Rebuild the index from what the kernel holds (a netcfg.nft.KernelState); returns
        how many devices it found. A MAC the kernel holds twice keeps its longest element; the
        other is removed."""
        now = self._clock()
        with self._lock:
            self._by_mac.clear()
            self._by_ip.clear()
            extra: list[tuple[str, str]] = []
            for (mac, ip), (timeout, expires) in sorted(state.authorised.items(), key=lambda kv: kv[1][1]):
                if expires <= 0:
                    continue
                old = self._by_mac.get(mac)
                if old is not None:
                    extra.append((mac, old.ip))
                    self._unindex(mac)
                self._index(mac, Entry(ip=ip, timeout=timeout, until=now + expires, since=now))
        for mac, ip in extra:
            log.warning("kernel held %s twice; removing its element for %s", mac, ip)
            self._sets.change(mac, [ip], None)
            entry = self._by_mac[mac]
            self._sets.change(mac, [], (entry.ip, max(1, int(entry.until - now))))
        return len(self._by_mac)

    def _index(self, mac: str, entry: Entry) -> None:
        self._by_mac[mac] = entry
        self._by_ip.setdefault(entry.ip, set()).add(mac)

    def _unindex(self, mac: str) -> Entry | None:
        entry = self._by_mac.pop(mac, None)
        if entry is not None:
            macs = self._by_ip.get(entry.ip)
            if macs is not None:
                macs.discard(mac)
                if not macs:
                    del self._by_ip[entry.ip]
        return entry

    def snapshot(self) -> dict[str, Entry]:
        """A copy of the index (for the sweeper)."""
        with self._lock:
            return dict(self._by_mac)

    def entry(self, mac: str) -> Entry | None:
        """The index entry of one MAC, or None."""
        return self._by_mac.get(mac)

    def forget(self, mac: str, entry: Entry) -> bool:
        """Drop `mac` from the index if it still holds `entry` (the kernel already dropped it:
        its timeout ran out). False if a newer change replaced it meanwhile."""
        with self._lock:
            if self._by_mac.get(mac) != entry:
                return False
            self._unindex(mac)
            return True

    # -- the Gate protocol ------------------------------------------------------------

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        """Let (mac, ip) through for `seconds`, replacing any earlier address of `mac`."""
        mac, ip, seconds = _mac(mac), _ipv4(ip), _seconds(seconds)
        with self._lock:
            old = self._by_mac.get(mac)
            self._sets.change(mac, [old.ip] if old else [], (ip, seconds))
            fault("gate.after_kernel")
            now = self._clock()
            self._unindex(mac)
            self._index(mac, Entry(ip=ip, timeout=seconds, until=now + seconds, since=now))
            self.changes += 1

    def revoke(self, mac: str) -> list[str]:
        """Shut `mac` out now; the addresses it had (empty if it was not let through)."""
        mac = _mac(mac)
        with self._lock:
            old = self._by_mac.get(mac)
            self._sets.change(mac, [old.ip] if old else [], None)
            fault("gate.after_kernel")
            self._unindex(mac)
            self.changes += 1
        if old is not None:
            _forget_connections(mac, old.ip)
        return [old.ip] if old and old.until > self._clock() else []

    def authorised(self, mac: str | None = None, ip: str | None = None) -> list[Authorisation]:
        """Devices let through now (from the index: no kernel read)."""
        now = self._clock()
        with self._lock:
            if mac is not None:
                macs = [_mac(mac)]
            elif ip is not None:
                macs = list(self._by_ip.get(ip, ()))
            else:
                macs = list(self._by_mac)
            entries = [(m, self._by_mac.get(m)) for m in macs]
        return [Authorisation(mac=m, ip=e.ip, timeout=e.timeout, expires=int(e.until - now))
                for m, e in entries if e is not None and e.until > now and (ip is None or e.ip == ip)]

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC behind `ip` in the neighbour table."""
        return self._mac_for_ip(_ipv4(ip))

    def health(self) -> dict:
        """Devices let through, uptime, last sweep and last read of the idle sets."""
        now = time.time()
        return {"ok": True, "devices": len(self.authorised()), "uptime_s": round(now - self.started),
                "last_sweep_s_ago": None if self.last_sweep is None else round(now - self.last_sweep, 1),
                "last_idle_read_s_ago": None if self.last_idle_read is None else round(now - self.last_idle_read, 1),
                "changes": self.changes, "pid": os.getpid()}


def _forget_connections(mac: str, ip: str) -> None:
    """Cut the revoked device's open connections (conntrack), so replies stop at once too.
    The sets are already changed: a failure here is logged, never undoes the revocation."""
    from netcfg.fastpath import FastPathError, forget_connections
    try:
        forget_connections([ip])
    except (FastPathError, OSError) as exc:
        log.warning("revoked %s but its connections stay until they time out: %s", mac, exc)


def _mac(mac) -> str:
    try:
        return normalise_mac(str(mac))
    except ValueError as exc:
        raise GateError(str(exc)) from None


def _ipv4(ip) -> str:
    try:
        return str(ipaddress.IPv4Address(str(ip)))
    except ValueError:
        raise GateError(f"not an IPv4 address: {str(ip)[:60]!r}") from None


def _seconds(seconds) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_SECONDS:
        raise GateError(f"seconds must be an integer from 1 to {MAX_SECONDS}, not {seconds!r}")
    return seconds


# -- the socket -------------------------------------------------------------------------

def dispatch(service: GateService, request: dict, handlers: dict | None = None) -> object:
    """Run one decoded request against the service (or one of the extra `handlers`, op -> callable
    taking the request, that the process composing the gate added); GateError for a bad one."""
    op = request.get("op")
    if handlers and op in handlers:
        return handlers[op](request)
    if op == "authorise":
        return service.authorise(request.get("mac"), request.get("ip"), request.get("seconds"))
    if op == "revoke":
        return service.revoke(request.get("mac"))
    if op == "list":
        ip = request.get("ip")
        return [a.to_dict() for a in service.authorised(mac=request.get("mac"), ip=_ipv4(ip) if ip else None)]
    if op == "mac_for_ip":
        return service.mac_for_ip(request.get("ip"))
    if op == "health":
        return service.health()
    raise GateError(f"unknown op {str(op)[:40]!r}; the gate offers authorise, revoke, list, mac_for_ip, health")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        service: GateService = self.server.service  # type: ignore[attr-defined]
        while True:
            line = self.rfile.readline(MAX_REQUEST + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
                self._answer({"ok": False, "error": f"request longer than {MAX_REQUEST} bytes or cut off"})
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise GateError("a request is a JSON object")
                answer = {"ok": True, "result": dispatch(service, request, getattr(self.server, "handlers", None))}
            except json.JSONDecodeError as exc:
                answer = {"ok": False, "error": f"not JSON: {exc}"}
            except GateError as exc:
                answer = {"ok": False, "error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - the kernel said no (NftError) or worse: say so, keep serving
                log.exception("gate request failed: %s", str(request)[:200])
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
            try:
                self._answer(answer)
            except OSError:
                return  # the client went away; its change (if any) is in the index and the kernel

    def _answer(self, answer: dict) -> None:
        self.wfile.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")


class GateServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The gate's Unix socket server: one thread per connection."""

    daemon_threads = True
    # socketserver listens with a backlog of 5. Each portal thread opens a connection per
    # question, and a client with a timeout gets EAGAIN at once (not a wait) when the backlog is
    # full: at 32 concurrent page loads a quarter of the answers were 503 "gate unavailable".
    request_queue_size = 256

    def __init__(self, path: Path, service: GateService, mode: int = 0o660, group: str = "",
                 handlers: dict | None = None) -> None:
        self.service = service
        self.handlers = dict(handlers or {})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        super().__init__(str(path), _Handler)
        try:
            gid = grp.getgrnam(group).gr_gid if group else -1
        except KeyError:
            self.server_close()
            path.unlink(missing_ok=True)
            raise GateError(f"gate.socket_group {group!r} does not exist; fix: create it (groupadd --system {group}) "
                            "or set socket_group = \"\"") from None
        os.chown(path, -1, gid)
        os.chmod(path, mode)
        self.path = path

    def server_close(self) -> None:
        super().server_close()


def _remove_stale(path: Path) -> None:
    """Remove a socket file left by a gate that died; refuse if a gate still answers there."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise GateError(f"another gate is already serving {path}; fix: stop it first (only one gate may write the sets)")
