"""The RADIUS server hostapd talks to: MAC authorisation (auth port) and accounting.

Packets are decoded, verified and answered with pyrad's public API (Host, packets,
RemoteHost); the receive loop is our own rather than pyrad.server.Server.Run because we
need three things Run cannot give: a loop that stops (tests, clean shutdown), group commit
(a burst of requests is written in one transaction, fsynced once, and only then answered,
as RFC 2866 asks) and every check done here, not left to the library version:
Message-Authenticator on Access-Requests, the Request Authenticator on Accounting-Requests.

Every request is either answered after its record is committed, or dropped with one log
line saying why (unknown NAS, malformed, wrong secret, wrong code, ledger failure).
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from pyrad import packet as rp
from pyrad.host import Host
from pyrad.server import RemoteHost

from ledger import accounting as acc
from ledger.db import Ledger, LedgerError
from radius.attributes import MAX_PACKET, load_dictionary
from radius.policy import MacPolicy
from base.addr import normalise_mac
from base.config import RadiusConfig

log = logging.getLogger("skillspot.radius")

# How many datagrams one socket may contribute to a batch before the others get a turn.
BATCH_PER_SOCKET = 256
# A retransmitted Access-Request (same NAS, Identifier and Request Authenticator, RFC 5080
# 2.2.2) within this window gets the first answer again and no second radius_auth row. hostapd
# resends within seconds and gives up well inside a minute.
AUTH_DUPLICATE_SECONDS = 60.0
AUTH_DUPLICATE_MAX = 100_000  # entries kept at most: memory stays bounded under a flood


class Dropped(Exception):
    """A request that gets no answer; str() is the log line's reason."""


@dataclass
class Pending:
    """A verified request: its ledger write and the reply to send once that is committed."""

    sock: socket.socket
    addr: tuple[str, int]
    reply: bytes
    write: Callable[[Ledger], object]
    summary: str
    # Called when the write could not be committed (the request goes unanswered).
    not_stored: Callable[[], None] | None = None
    stop_mac: str | None = None  # an Accounting Stop of this station: its session ends after the answer


@dataclass
class _SeenAuth:
    """An Access-Request already answered (or being answered in this batch)."""

    reply: bytes
    expires: float
    failed: bool = False


def _first(pkt: rp.Packet, name: str):
    """The first value of an attribute, or None; a value that does not decode is malformed."""
    if name not in pkt:
        return None
    try:
        return pkt[name][0]
    except Exception as exc:  # pyrad raises struct/Unicode/Value errors on bad encodings
        raise Dropped(f"malformed {name}: {type(exc).__name__}: {exc}") from None


def _str(pkt: rp.Packet, name: str) -> str | None:
    """A text attribute; pyrad hands back bytes when the value is not UTF-8."""
    value = _first(pkt, name)
    if isinstance(value, (bytes, bytearray)):
        raise Dropped(f"malformed {name}: not UTF-8 text")
    return value


def _int(pkt: rp.Packet, name: str) -> int | None:
    value = _first(pkt, name)
    return None if value is None else int(value)


def _octets(pkt: rp.Packet, low: str, giga: str) -> int | None:
    """A 64-bit counter from its 32-bit attribute and the Gigawords carry (RFC 2869 5.1)."""
    value = _int(pkt, low)
    if value is None:
        return None
    return ((_int(pkt, giga) or 0) << 32) + value


class RadiusServer:
    """Serve hostapd's MAC-ACL Access-Requests and Accounting-Requests into the ledger."""

    def __init__(self, cfg: RadiusConfig, ledger: Ledger, idle_seconds: int = 900,
                 on_stop: Callable[[str, "Pending"], None] | None = None) -> None:
        """`idle_seconds` is portal.idle_seconds (sent as Idle-Timeout); `on_stop(mac, record)` is
        called once an Accounting Stop is committed and answered (the session layer ends the
        device's session there)."""
        self.cfg = cfg
        self.ledger = ledger
        self.idle_seconds = idle_seconds
        self.on_stop = on_stop
        self.dict = load_dictionary()
        self.host = Host(dict=self.dict)
        self.clients = {str(c.address): RemoteHost(str(c.address), c.secret.encode(), c.name) for c in cfg.clients}
        self.policy = MacPolicy(cfg)
        self._seen_auth: OrderedDict[tuple, _SeenAuth] = OrderedDict()
        self._stop = threading.Event()
        self._sockets: list[tuple[socket.socket, str]] = []
        self.ready = threading.Event()

    # -- sockets and loop ---------------------------------------------------------------
    def bind(self) -> None:
        """Open the auth and accounting sockets on listen_address (raises OSError if taken)."""
        for port, kind in ((self.cfg.auth_port, "auth"), (self.cfg.acct_port, "acct")):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((str(self.cfg.listen_address), port))
            except OSError:
                sock.close()
                self.close()
                raise
            sock.setblocking(False)
            # A burst from many APs must not overflow the default receive buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._sockets.append((sock, kind))
        if self.cfg.durable_sync:
            # An answered Accounting-Request is never resent: fsync before answering.
            self.ledger.db.conn.execute("PRAGMA synchronous = FULL")
        log.info("RADIUS listening on %s auth %d acct %d, %d NAS(es)", self.cfg.listen_address,
                 self.cfg.auth_port, self.cfg.acct_port, len(self.clients))

    def close(self) -> None:
        """Close the sockets."""
        for sock, _ in self._sockets:
            sock.close()
        self._sockets.clear()

    def stop(self) -> None:
        """Ask serve_forever to return (from another thread or a signal handler)."""
        self._stop.set()

    def serve_forever(self, poll_seconds: float = 0.2) -> None:
        """Receive, verify, record and answer until stop() is called."""
        if not self._sockets:
            self.bind()
        sel = selectors.DefaultSelector()
        for sock, kind in self._sockets:
            sel.register(sock, selectors.EVENT_READ, kind)
        self.ready.set()
        try:
            while not self._stop.is_set():
                batch = []
                for key, _ in sel.select(poll_seconds):
                    batch.extend(self._drain(key.fileobj, key.data))
                if batch:
                    self.process(batch)
        finally:
            sel.close()
            self.close()

    def _drain(self, sock: socket.socket, kind: str) -> list[tuple[socket.socket, str, bytes, tuple]]:
        got = []
        for _ in range(BATCH_PER_SOCKET):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.warning("receive error on %s socket: %s", kind, exc)
                break
            got.append((sock, kind, data, addr))
        return got

    def process(self, batch: list[tuple[socket.socket, str, bytes, tuple]]) -> None:
        """Verify every datagram of a batch, commit their records together, then answer."""
        pending: list[Pending] = []
        for sock, kind, data, addr in batch:
            try:
                handler = self._handle_auth if kind == "auth" else self._handle_acct
                pending.append(handler(sock, data, addr))
            except Dropped as exc:
                log.warning("dropped %s packet from %s:%d (%d bytes): %s", kind, addr[0], addr[1], len(data), exc)
            except Exception:
                log.exception("dropped %s packet from %s:%d: unexpected error", kind, addr[0], addr[1])
        if not pending:
            return
        try:
            with acc.transaction(self.ledger):
                for p in pending:
                    p.write(self.ledger)
            committed = pending
        except LedgerError as exc:
            log.error("batch of %d not committed (%s); retrying one by one", len(pending), exc)
            committed = []
            for p in pending:
                try:
                    with acc.transaction(self.ledger):
                        p.write(self.ledger)
                    committed.append(p)
                except LedgerError as one:
                    # No answer: hostapd will retransmit, and nothing is claimed stored that is not.
                    log.error("not answering %s from %s: %s", p.summary, p.addr[0], one)
                    if p.not_stored is not None:
                        p.not_stored()
        for p in committed:
            try:
                p.sock.sendto(p.reply, p.addr)
            except OSError as exc:
                log.warning("could not answer %s at %s:%d: %s", p.summary, p.addr[0], p.addr[1], exc)
        # Sessions end after every answer is out: the gate is another process and may be slow.
        for p in committed:
            if p.stop_mac and self.on_stop is not None:
                try:
                    self.on_stop(p.stop_mac, p)
                except Exception as exc:  # noqa: BLE001 - the record is stored; the sweeper catches up
                    log.error("could not end the session of %s after its Accounting Stop: %s", p.stop_mac, exc)

    # -- request handling ---------------------------------------------------------------
    def _client(self, addr: tuple, data: bytes) -> RemoteHost:
        client = self.clients.get(addr[0])
        if client is None:
            raise Dropped("unknown NAS address (not in radius.clients)")
        if len(data) > MAX_PACKET:
            raise Dropped(f"oversized: {len(data)} bytes, RADIUS allows {MAX_PACKET}")
        return client

    def _handle_auth(self, sock: socket.socket, data: bytes, addr: tuple) -> Pending:
        client = self._client(addr, data)
        try:
            pkt = self.host.CreateAuthPacket(packet=data, secret=client.secret)
        except Exception as exc:
            raise Dropped(f"malformed: {exc}") from None
        if pkt.code != rp.AccessRequest:
            raise Dropped(f"code {pkt.code} is not Access-Request")
        if pkt.message_authenticator:
            if not pkt.verify_message_authenticator():
                raise Dropped("Message-Authenticator does not verify (wrong shared secret?)")
        elif self.cfg.require_message_authenticator:
            raise Dropped("no Message-Authenticator (radius.require_message_authenticator is on)")
        dup_key = (addr[0], _str(pkt, "NAS-Identifier"), pkt.id, bytes(pkt.authenticator))
        seen = self._seen(dup_key)
        if seen is not None:
            def already(ledger: Ledger, seen: _SeenAuth = seen) -> None:
                # Answer again only if the first one was stored (it is written first, in this
                # batch or an earlier one); otherwise stay silent like the first.
                if seen.failed:
                    raise LedgerError("the first copy of this Access-Request was not stored")
            log.info("Access-Request id %d from %s is a retransmission: answered again, stored once",
                     pkt.id, addr[0])
            return Pending(sock, addr, seen.reply, already, f"Access-Request id {pkt.id} (retransmission)")
        user_name = _str(pkt, "User-Name")
        if not user_name:
            raise Dropped("no User-Name")
        password = None
        if "User-Password" in pkt:
            try:
                password = pkt.PwDecrypt(pkt["User-Password"][0])
            except rp.PacketError as exc:
                raise Dropped(f"malformed User-Password: {exc}") from None
        calling = _str(pkt, "Calling-Station-Id")
        called = _str(pkt, "Called-Station-Id")
        nas_id = _str(pkt, "NAS-Identifier")
        mac, verdict = self.policy.decide(user_name, password, calling)

        reply = pkt.CreateReply()
        reply.add_message_authenticator()  # first attribute (hostapd 2.11 / BlastRADIUS)
        if verdict.accept:
            reply["Session-Timeout"] = self.cfg.session_timeout_seconds
            # hostapd ignores Idle-Timeout; sent for other NASes, idle is enforced by the box.
            reply["Idle-Timeout"] = self.idle_seconds
            reply["Acct-Interim-Interval"] = self.cfg.interim_interval_seconds
        else:
            reply.code = rp.AccessReject
        raw = reply.ReplyPacket()
        decision = acc.AuthDecision(
            nas_address=addr[0], nas_identifier=nas_id, mac=mac, user_name=user_name, called_station_id=called,
            decision="accept" if verdict.accept else "reject", reason=verdict.reason,
            session_timeout=self.cfg.session_timeout_seconds if verdict.accept else None,
            idle_timeout=self.idle_seconds if verdict.accept else None)
        summary = f"Access-Request {user_name!r}: {decision.decision} ({verdict.reason})"
        log.info("%s from %s %s", summary, addr[0], nas_id or "")
        entry = self._remember(dup_key, raw)

        def forget() -> None:
            entry.failed = True
            self._seen_auth.pop(dup_key, None)
        return Pending(sock, addr, raw, lambda ledger: acc.record_auth_decision(ledger, decision), summary,
                       not_stored=forget)

    def _seen(self, key: tuple) -> _SeenAuth | None:
        """The earlier copy of this Access-Request, if it came within AUTH_DUPLICATE_SECONDS."""
        now = time.monotonic()
        while self._seen_auth:  # oldest first: drop what has expired
            oldest = next(iter(self._seen_auth.values()))
            if oldest.expires > now:
                break
            self._seen_auth.popitem(last=False)
        return self._seen_auth.get(key)

    def _remember(self, key: tuple, reply: bytes) -> _SeenAuth:
        entry = _SeenAuth(reply, time.monotonic() + AUTH_DUPLICATE_SECONDS)
        self._seen_auth[key] = entry
        while len(self._seen_auth) > AUTH_DUPLICATE_MAX:
            self._seen_auth.popitem(last=False)
        return entry

    def _handle_acct(self, sock: socket.socket, data: bytes, addr: tuple) -> Pending:
        client = self._client(addr, data)
        try:
            pkt = self.host.CreateAcctPacket(packet=data, secret=client.secret)
        except Exception as exc:
            raise Dropped(f"malformed: {exc}") from None
        if pkt.code != rp.AccountingRequest:
            raise Dropped(f"code {pkt.code} is not Accounting-Request")
        if not pkt.VerifyAcctRequest():
            raise Dropped("Request Authenticator does not verify (wrong shared secret?)")
        if pkt.message_authenticator and not pkt.verify_message_authenticator():
            raise Dropped("Message-Authenticator does not verify")
        status = _int(pkt, "Acct-Status-Type")
        if status is None:
            raise Dropped("no Acct-Status-Type")
        sid = _str(pkt, "Acct-Session-Id")
        nas_id = _str(pkt, "NAS-Identifier")
        event = _int(pkt, "Event-Timestamp")
        calling = _str(pkt, "Calling-Station-Id")
        try:
            mac = normalise_mac(calling) if calling else None
        except ValueError:
            mac = None  # stored as sent in neither column; the record still counts
        framed = _first(pkt, "Framed-IP-Address")
        if event is not None:
            # hostapd resends with a new Identifier and Acct-Delay-Time: this is what stays.
            key = f"{addr[0]}|{nas_id or ''}|{sid or ''}|{status}|{event}"
        else:
            key = f"{addr[0]}|{nas_id or ''}|auth:{pkt.authenticator.hex()}"
        record = acc.AcctRecord(
            nas_address=addr[0], nas_identifier=nas_id, status_type=status, acct_session_id=sid, mac=mac,
            user_name=_str(pkt, "User-Name"), called_station_id=_str(pkt, "Called-Station-Id"),
            framed_ip=str(framed) if framed is not None else None,
            input_octets=_octets(pkt, "Acct-Input-Octets", "Acct-Input-Gigawords"),
            output_octets=_octets(pkt, "Acct-Output-Octets", "Acct-Output-Gigawords"),
            input_packets=_int(pkt, "Acct-Input-Packets"), output_packets=_int(pkt, "Acct-Output-Packets"),
            session_time=_int(pkt, "Acct-Session-Time"), terminate_cause=_int(pkt, "Acct-Terminate-Cause"),
            event_ms=event * 1000 if event is not None else None, delay_time=_int(pkt, "Acct-Delay-Time"),
            dedupe_key=key)
        raw = pkt.CreateReply().ReplyPacket()
        summary = f"Accounting {acc.STATUS_NAMES.get(status, status)} session {sid}"
        log.debug("%s from %s %s", summary, addr[0], nas_id or "")

        def write(ledger: Ledger) -> None:
            if acc.record_accounting(ledger, record) is None:
                log.info("%s from %s is a retransmission: answered, stored once", summary, addr[0])
        stop = mac if status == acc.STATUS_STOP and mac else None
        return Pending(sock, addr, raw, write, summary, stop_mac=stop)
