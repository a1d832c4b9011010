"""The box's public address in the heartbeat (the masquerade source its flows carry) and the
centre keeping both that and the address it saw the box from; and the two sync faults the
office-to-centre journey found: staged flows sent (and deleted by compaction before a retry
could rebuild their batch), and a null time in a batch leaving the centre's app database
connection inside a transaction."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from ledger import sync as lsync
from ledger.db import open_ledger
from ledger.flows import FlowEvent, compact, ip_int, latest_public_address, stage

from tests.sync_util import Centre, Clock, fill

BOX_WAN = "198.51.100.2"


def flow(start_ms: int, end_ms: int | None, pub: str, port: int, open_: int = 0, ct: int = 1) -> FlowEvent:
    return FlowEvent(ct, open_, start_ms, end_ms, 6, ip_int("10.99.0.50"), port, ip_int(pub), port,
                     ip_int("203.0.113.20"), 80, 100, 1000)


def test_latest_public_address_follows_the_newest_flow(tmp_path):
    clock = Clock(time.time())
    ledger = open_ledger(tmp_path / "ledger.sqlite", "box-addr", clock=clock)
    assert latest_public_address(ledger) is None  # no flow yet: the heartbeat says null
    now = ledger.now_ms()
    stage(ledger, [flow(now - 5000, now - 4000, "203.0.113.7", 40000)])
    clock.t += 1200
    assert compact(ledger, force=True)["flows"] == 1
    assert ledger.db.conn.execute("SELECT COUNT(*) FROM flow_staging").fetchone()[0] == 0
    assert latest_public_address(ledger) == "203.0.113.7"  # from the segment
    # The WAN address changed (a new DHCP lease from the ISP): the newest flow, still open in staging, wins.
    stage(ledger, [flow(ledger.now_ms(), None, BOX_WAN, 40001, open_=1, ct=2)])
    assert latest_public_address(ledger) == BOX_WAN
    ledger.close()


def test_staged_flows_are_not_sent_and_a_retried_batch_rebuilds_after_compaction(tmp_path):
    clock = Clock(time.time())
    ledger = open_ledger(tmp_path / "ledger.sqlite", "box-stage", clock=clock)
    fill(ledger, clock, n_users=1, flows_per_user=0)  # a lease and a login, so the batch is not empty
    now = ledger.now_ms()
    # What a live flow logger leaves between compactions: one finished flow and one still open.
    stage(ledger, [flow(now - 3000, None, BOX_WAN, 41000, open_=1, ct=1),
                   flow(now - 3000, now - 1000, BOX_WAN, 41000, open_=0, ct=1),
                   flow(now - 2000, None, BOX_WAN, 41001, open_=1, ct=2)])
    b = lsync.form_batch(ledger, 1000)
    assert b is not None and "flow_staging" not in b.ranges, b.ranges
    compact(ledger, force=True)  # consumes staged rows while the batch waits for its acknowledgement
    again = lsync.rebuild(ledger, b.seq)
    assert again.hash == b.hash and again.body == b.body
    # The finished flow goes out in the next batch, as a segment row.
    nxt = lsync.form_batch(ledger, 1000)
    assert nxt is not None and "flow_segments" in nxt.ranges and "flow_staging" not in nxt.ranges
    ledger.close()


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    pytest.importorskip("chdb")
    c = Centre(tmp_path_factory.mktemp("centre-addr"))
    c.start()
    yield c
    c.stop()


def box_row(centre: Centre, box_id: str) -> dict:
    (pub, seen), = centre.appdb_rows("SELECT public_address, seen_address FROM boxes WHERE box_id = ?", (box_id,))
    return {"public_address": pub, "seen_address": seen}


def test_heartbeat_reports_the_flows_public_address_and_the_centre_keeps_both(tmp_path, centre):
    from boxsync.service import SyncService, SyncSettings
    box_id = f"addr-{uuid.uuid4().hex[:6]}"
    clock = Clock(time.time())
    ledger = open_ledger(tmp_path / "ledger.sqlite", box_id, clock=clock)
    svc = SyncService(ledger, SyncSettings(url=centre.url, data_dir=tmp_path, office="Office addr",
                                           enrol_code=centre.enrol_code(), batch_rows=500, batch_seconds=1,
                                           heartbeat_seconds=3600, timeout_seconds=10), clock=clock)
    svc.step()  # enrol, heartbeat: no flow yet
    assert not svc.last_error, svc.last_error
    assert box_row(centre, box_id) == {"public_address": None, "seen_address": "127.0.0.1"}
    fill(ledger, clock, n_users=1, flows_per_user=3)  # flows masqueraded to 203.0.113.7
    assert svc.heartbeat()["seen_address"] == "127.0.0.1"
    # The box says what its NAT writes (its WAN address); the centre saw it from loopback here,
    # as it would see an office behind another NAT from that NAT's address: both are kept.
    assert box_row(centre, box_id) == {"public_address": "203.0.113.7", "seen_address": "127.0.0.1"}
    # A heartbeat that does not know the address (flows pruned) keeps the last one reported.
    doc = {"version": "t", "box_time_ms": int(clock() * 1000), "health": {}, "public_address": None,
           "lag": {"unsent_rows": 0, "oldest_unsent_ms": None, "pending_batches": 0, "last_acked_seq": 0, "lag_ms": 0}}
    svc.client.heartbeat(doc)
    assert box_row(centre, box_id)["public_address"] == "203.0.113.7"
    ledger.close()


def test_a_batch_with_a_null_time_is_stored_and_the_next_batch_too(tmp_path, centre):
    """A table the centre has no schema for, with an end time not known yet (null): the centre
    stores the batch, and the next upload on the same connection works (no transaction left open)."""
    from boxsync.client import CentreClient
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from syncapi import batch as sbatch
    box_id = f"null-{uuid.uuid4().hex[:6]}"
    client = CentreClient(centre.url, box_id, Ed25519PrivateKey.generate(), timeout=10)
    client.enrol(centre.enrol_code(), "Office null", "t")
    now = int(time.time() * 1000)
    prev = sbatch.GENESIS
    for seq in range(1, 4):
        sections = {"future_spans": {"from": seq - 1, "to": seq, "columns": ["id", "at_ms", "end_ms"],
                                     "rows": [[seq, now, None if seq % 2 else now + 5]]}}
        _raw, h, wire = sbatch.build(box_id, seq, prev, now, sections)
        ack = client.upload(seq, wire, h)
        assert ack["seq"] == seq and ack["hash"] == h, ack
        prev = h
    (last_seq, rows), = centre.appdb_rows("SELECT last_seq, rows_received FROM boxes WHERE box_id = ?", (box_id,))
    assert (last_seq, rows) == (3, 3)
    assert json.loads(centre.appdb_rows("SELECT ranges FROM batches WHERE box_id = ? AND seq = 1", (box_id,))[0][0]) \
        == {"future_spans": [0, 1, 1]}
