"""Regression, found by the field test (a booted Debian box syncing to a real centre): a batch
holding a flow still open (flow_staging.end_ms NULL, as every busy box has) made the centre's
upload fail with HTTP 500, left its SQLite connection inside a transaction, and so failed every
later request served on it (the box's next enrolments and uploads). A real centre on loopback."""
from __future__ import annotations

import time
import uuid

import pytest

from boxsync.service import SyncService, SyncSettings
from ledger import sync as lsync
from ledger.db import open_ledger
from ledger.flows import FlowEvent, stage
from sync_util import PUB_IP, Centre

pytest.importorskip("chdb")


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    c = Centre(tmp_path_factory.mktemp("centre"), threads=2)   # few threads: a poisoned connection is soon reused
    c.start()
    yield c
    c.stop()


def box(tmp, centre: Centre, name: str):
    box_id = f"{name}-{uuid.uuid4().hex[:6]}"
    ledger = open_ledger(tmp / box_id / "ledger.sqlite", box_id)
    settings = SyncSettings(url=centre.url, data_dir=tmp / box_id, enrol_code=centre.enrol_code(), batch_rows=500,
                            batch_seconds=1, heartbeat_seconds=3600, backoff_max_seconds=5, timeout_seconds=10)
    return ledger, SyncService(ledger, settings)


def test_a_batch_with_an_open_flow_is_stored_and_the_centre_goes_on(tmp_path, centre):
    ledger, svc = box(tmp_path, centre, "open")
    now = ledger.now_ms() - 5000
    src = (10 << 24) | (99 << 16) | 50
    stage(ledger, [FlowEvent(None, 1, now, None, 6, src, 40000, PUB_IP, 40000, (93 << 24) + 1, 443, 0, 0),
                   FlowEvent(None, 0, now, now + 1000, 6, src, 40001, PUB_IP, 40001, (93 << 24) + 2, 443, 10, 20)])
    svc.ensure_enrolled()
    acked = svc.send_pending()
    assert acked == 1 and lsync.status(ledger)["last_acked_seq"] == 1
    keys = centre.row_keys(ledger.box_id)
    assert len(keys.get("flow_staging", [])) == 2, keys
    # Every server thread still serves: more boxes enrol and upload open flows.
    for i in range(4):
        other, svc2 = box(tmp_path, centre, f"after{i}")
        stage(other, [FlowEvent(None, 1, now, None, 6, src, 40002 + i, PUB_IP, 40002 + i, (93 << 24) + 3, 443, 0, 0)])
        svc2.ensure_enrolled()
        assert svc2.send_pending() == 1
    row = centre.appdb_rows("SELECT min_ms, max_ms, rows FROM batches WHERE box_id = ? AND seq = 1", (ledger.box_id,))
    assert row == [(now + 1000, now + 1000, 2)], row   # flow_staging counts end_ms only: the closed flow
