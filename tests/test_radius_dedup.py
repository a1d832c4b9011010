"""A retransmitted Access-Request (same NAS, Identifier and Request Authenticator) is answered
again but stored once in radius_auth, as accounting retransmissions are (issue 16, item 6)."""
from __future__ import annotations

import logging
import time

from pyrad import packet as rp

from ledger import accounting as acc
from test_radius_server import PHONE, Peer, build, mac_request, server  # noqa: F401 - fixture


def test_a_retransmitted_access_request_is_answered_twice_and_stored_once(server, caplog):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    peer = Peer()
    raw = build(rp.AccessRequest, mac_request())[1]
    peer.send(raw, server.cfg.auth_port)
    first = peer.receive()
    peer.send(raw, server.cfg.auth_port)  # the same datagram again: hostapd did not see our answer
    again = peer.receive()
    assert first == again and first[0] == rp.AccessAccept
    assert len(acc.auth_decisions(server.reader(), mac=PHONE)) == 1
    assert "is a retransmission: answered again, stored once" in caplog.text
    # A new request (new Identifier and Authenticator) for the same phone is a new decision.
    peer.send(build(rp.AccessRequest, mac_request())[1], server.cfg.auth_port)
    assert peer.receive()[0] == rp.AccessAccept
    assert len(acc.auth_decisions(server.reader(), mac=PHONE)) == 2


def test_copies_in_one_burst_are_stored_once(server):
    peer = Peer()
    raw = build(rp.AccessRequest, mac_request())[1]
    for _ in range(5):
        peer.send(raw, server.cfg.auth_port)
    answers = [peer.receive() for _ in range(5)]
    assert len(set(answers)) == 1
    assert len(acc.auth_decisions(server.reader(), mac=PHONE)) == 1


def test_a_copy_of_a_request_that_was_not_stored_is_not_answered_until_it_is(server, caplog):
    caplog.set_level(logging.INFO, logger="skillspot.radius")
    side = server.reader()
    side.db.conn.execute("CREATE TRIGGER skr_refuse_auth BEFORE INSERT ON radius_auth "
                         "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    peer = Peer()
    raw = build(rp.AccessRequest, mac_request())[1]
    peer.send(raw, server.cfg.auth_port)
    deadline = time.monotonic() + 10
    while "not answering Access-Request" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.02)
    assert peer.nothing_pending()
    side.db.conn.execute("DROP TRIGGER skr_refuse_auth")
    peer.send(raw, server.cfg.auth_port)  # the retransmission is decided and stored afresh
    assert peer.receive()[0] == rp.AccessAccept
    assert len(acc.auth_decisions(side, mac=PHONE)) == 1
