"""End to end: a box's `skillspot sync` against a real `central serve` (gunicorn, chDB) on
loopback. Each fault ends with every box row at the centre exactly once, counted row by row."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from boxsync.client import CentreClient, CentreRefused, CentreUnavailable
from boxsync.service import SyncService, SyncSettings, load_or_create_key
from ledger import sync as lsync
from ledger.db import open_ledger
from ledger.retention import acknowledged_seal, prune
from ledger.seal import load_or_create_key as ledger_key, seal
from syncapi import batch as sbatch
from syncapi import signing

from tests.sync_util import Centre, Clock, assert_exactly_once, fill, free_port

pytest.importorskip("chdb")
T0 = 1_790_000_000.0  # 2026-09-21


@pytest.fixture(scope="module")
def centre(tmp_path_factory):
    c = Centre(tmp_path_factory.mktemp("centre"))
    c.start()
    yield c
    c.stop()


def make_box(tmp: Path, centre: Centre, name: str, clock: Clock | None = None, url: str | None = None,
             code: str | None = "auto", **kw):
    box_id = f"{name}-{uuid.uuid4().hex[:6]}"
    clock = clock or Clock(time.time())
    data = tmp / box_id
    ledger = open_ledger(data / "ledger.sqlite", box_id, clock=clock)
    settings = SyncSettings(url=url or centre.url, data_dir=data, office=f"Office {name}",
                            enrol_code=centre.enrol_code() if code == "auto" else (code or ""),
                            batch_rows=kw.pop("batch_rows", 500), batch_seconds=1, heartbeat_seconds=3600,
                            backoff_max_seconds=kw.pop("backoff_max_seconds", 30), timeout_seconds=10)
    svc = SyncService(ledger, settings, clock=clock)
    return ledger, svc, clock


def drain(svc: SyncService, deadline_s: float = 60) -> None:
    """Step until nothing is unsent or pending (bounded)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        svc.step()
        st = lsync.status(svc.ledger)
        if not svc.last_error and st["pending_batches"] == 0 and st["unsent_rows"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"sync did not finish: {svc.last_error} {lsync.status(svc.ledger)}")


def test_sync_every_table_exactly_once_and_retention_waits_for_ack(tmp_path, centre):
    ledger, svc, clock = make_box(tmp_path, centre, "basic", clock=Clock(time.time() - 100 * 86400))
    fill(ledger, clock, n_users=5, flows_per_user=300)
    key = ledger_key(ledger.path.parent)
    seal(ledger, key)
    # Before any ack, retention deletes nothing even far past the retention period.
    clock.t += 200 * 86400
    rep = prune(ledger, 90)
    assert rep.deleted == {} and rep.kept_unacked, rep
    drain(svc)
    n = assert_exactly_once(centre, ledger)
    assert n > 1500
    st = lsync.status(ledger)
    assert st["last_acked_seq"] == st["formed_seq"] > 1 and st["lag_ms"] == 0
    assert acknowledged_seal(ledger) >= 1
    rep = prune(ledger, 90)
    assert rep.deleted.get("flows_long") and rep.deleted.get("logins"), rep
    # Rows written after the seal are neither acknowledged nor pruned.
    fill(ledger, clock, n_users=1, flows_per_user=5, tag="late")
    clock.t += 200 * 86400
    late = ledger.db.conn.execute("SELECT MAX(id) FROM logins").fetchone()[0]
    rep = prune(ledger, 90)
    assert rep.kept_unacked.get("logins") == 1, rep
    assert ledger.db.conn.execute("SELECT COUNT(*) FROM logins WHERE id = ?", (late,)).fetchone()[0] == 1
    # Ids keep growing after retention emptied a table down to its newest row.
    assert late > st["acked_marks"]["logins"]


def test_centre_down_for_hours_then_catch_up_oldest_first(tmp_path, centre):
    dead = f"http://127.0.0.1:{free_port()}"
    ledger, svc, clock = make_box(tmp_path, centre, "down", url=dead, backoff_max_seconds=600)
    delays = []
    for hour in range(6):
        fill(ledger, clock, n_users=2, flows_per_user=50, tag=f"h{hour}")
        clock.t += 3600
        delays.append(svc.step())
        assert "Connection" in svc.last_error or "refused" in svc.last_error.lower()
    assert svc.backoff.failures == 6 and max(delays) <= 600
    assert lsync.status(ledger)["last_acked_seq"] == 0
    svc.client.base = centre.url
    svc.step()
    acked = [r[0] for r in ledger.db.conn.execute("SELECT seq FROM sync_acks ORDER BY id")]
    assert acked == sorted(acked) and acked[0] == 1
    drain(svc)
    assert svc.backoff.failures == 0
    assert assert_exactly_once(centre, ledger) > 600


class CutProxy:
    """A loopback TCP proxy that, once armed, cuts the connection: 'request' after forwarding part of
    the request (the centre never gets the whole batch), 'response' after the whole request went
    through but before the answer reaches the box (the centre stored it, the box never heard)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.mode: str | None = None
        self.cuts = 0
        self.done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                cli, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(cli,), daemon=True).start()

    def _serve(self, cli: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.target))
        mode, self.mode = self.mode, None
        if mode:
            self.cuts += 1
        try:
            data = b""
            cli.settimeout(10)
            while b"\r\n\r\n" not in data:
                data += cli.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                         if b"content-length" in head.lower() else 0)
            while len(rest) < length:
                rest += cli.recv(65536)
            if mode == "request":
                up.sendall(head + b"\r\n\r\n" + rest[: length // 2])
                return
            up.sendall(head + b"\r\n\r\n" + rest)
            resp = b""
            up.settimeout(30)
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                resp += chunk
                if mode == "response" and b"\r\n\r\n" in resp:
                    h, _, b = resp.partition(b"\r\n\r\n")
                    cl = [l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")]
                    if cl and len(b) >= int(cl[0]):
                        return  # the centre answered; the box never sees it
                if b"\r\n\r\n" in resp:
                    h, _, b = resp.partition(b"\r\n\r\n")
                    cl = [l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")]
                    if cl and len(b) >= int(cl[0]):
                        break
            cli.sendall(resp)
        except OSError:
            pass
        finally:
            cli.close()
            up.close()

    def close(self) -> None:
        self.done.set()
        self.sock.close()


def test_connection_cut_mid_batch_both_ways(tmp_path, centre):
    proxy = CutProxy(centre.port)
    try:
        ledger, svc, clock = make_box(tmp_path, centre, "cut", url=f"http://127.0.0.1:{proxy.port}")
        svc.step()  # enrol through the proxy
        fill(ledger, clock, n_users=3, flows_per_user=100)
        for mode in ("request", "response"):
            proxy.mode = mode
            svc.step()
            assert svc.last_error, mode
        assert proxy.cuts == 2
        drain(svc)
        dup = centre.appdb_rows("SELECT COUNT(*) FROM batches WHERE box_id = ?", (ledger.box_id,))[0][0]
        assert dup == lsync.status(ledger)["formed_seq"]
        assert assert_exactly_once(centre, ledger) > 300
    finally:
        proxy.close()


def _first_batch(tmp_path, centre, name):
    ledger, svc, clock = make_box(tmp_path, centre, name)
    svc.ensure_enrolled()
    fill(ledger, clock, n_users=2, flows_per_user=20)
    b = lsync.form_batch(ledger, 10_000)
    return ledger, svc, clock, b


def test_duplicate_batch_acknowledged_and_stored_once(tmp_path, centre):
    ledger, svc, clock, b = _first_batch(tmp_path, centre, "dup")
    a1 = svc.client.upload(b.seq, b.body, b.hash)
    a2 = svc.client.upload(b.seq, b.body, b.hash)
    assert (a1["status"], a2["status"]) == ("stored", "duplicate") and a1["receipt"] == a2["receipt"]
    lsync.record_ack(ledger, b.seq, a2["receipt"], a2["received_ms"])
    assert assert_exactly_once(centre, ledger) == b.rows


def test_replayed_and_altered_old_batch_refused(tmp_path, centre):
    ledger, svc, clock, b = _first_batch(tmp_path, centre, "replay")
    path = f"/api/v1/boxes/{ledger.box_id}/batches/{b.seq}"
    headers = {**signing.sign_request(svc.client.key, "POST", path, ledger.box_id, b.body, int(time.time() * 1000)),
               sbatch.H_HASH: b.hash, "Content-Type": sbatch.CONTENT_TYPE}
    r1 = requests.post(centre.url + path, data=b.body, headers=headers, timeout=30)
    assert r1.status_code == 200
    r2 = requests.post(centre.url + path, data=b.body, headers=headers, timeout=30)  # byte-for-byte replay
    assert r2.status_code == 401 and r2.json()["error"] == "replayed_nonce"
    # An old seq re-sent with other content (correctly signed): refused, alert raised.
    payload, _ = sbatch.parse(b.body)
    payload["tables"]["logins"]["rows"][0][5] = "someone else"
    raw = sbatch.encode(payload)
    with pytest.raises(CentreRefused) as ei:
        svc.client.upload(b.seq, sbatch.compress(raw), sbatch.batch_hash(raw))
    assert ei.value.status == 409 and ei.value.code == "conflict"
    assert centre.appdb_rows("SELECT COUNT(*) FROM alerts WHERE box_id = ? AND kind = 'conflicting_batch'",
                             (ledger.box_id,))[0][0] == 1
    lsync.record_ack(ledger, b.seq, r1.json()["receipt"], None)
    drain(svc)
    assert assert_exactly_once(centre, ledger) > 0


def test_out_of_order_batches(tmp_path, centre):
    ledger, svc, clock, b1 = _first_batch(tmp_path, centre, "order")
    fill(ledger, clock, n_users=1, flows_per_user=10, tag="2")
    b2 = lsync.form_batch(ledger, 10_000)
    with pytest.raises(CentreRefused) as ei:
        svc.client.upload(b2.seq, b2.body, b2.hash)
    assert ei.value.status == 409 and ei.value.body["expected_seq"] == 1
    drain(svc)
    assert [r[0] for r in ledger.db.conn.execute("SELECT seq FROM sync_acks ORDER BY id")] == [1, 2]
    assert assert_exactly_once(centre, ledger) == b1.rows + b2.rows


def test_box_clock_hours_off(tmp_path, centre):
    clock = Clock(time.time() + 5 * 3600)
    ledger, svc, _ = make_box(tmp_path, centre, "skew", clock=clock)
    fill(ledger, clock, n_users=2, flows_per_user=10)
    drain(svc)
    assert abs(svc.client.offset_ms + 5 * 3600_000 + 1200_000) < 3600_000  # learnt from the centre
    assert assert_exactly_once(centre, ledger) > 0
    box_times = [r[0] for r in ledger.db.conn.execute("SELECT at_ms FROM logins")]
    rows = centre.appdb_rows("SELECT box_created_ms, received_ms FROM batches WHERE box_id = ?", (ledger.box_id,))
    for created, received in rows:
        assert created - received > 4 * 3600_000  # the box's times kept, the centre's receive time beside them
    assert min(box_times) > time.time() * 1000 + 4 * 3600_000


def test_unknown_box_and_wrong_signature_refused(tmp_path, centre):
    ledger, svc, clock = make_box(tmp_path, centre, "ghost", code=None)
    fill(ledger, clock, n_users=1, flows_per_user=5)
    b = lsync.form_batch(ledger, 1000)
    with pytest.raises(CentreRefused) as ei:
        svc.client.upload(b.seq, b.body, b.hash)
    assert ei.value.status == 401 and ei.value.code == "unknown_box"
    assert centre.row_keys(ledger.box_id) == {}
    # An enrolled box, but the request signed by another key.
    ledger2, svc2, clock2, b2 = _first_batch(tmp_path, centre, "forged")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    forger = CentreClient(centre.url, ledger2.box_id, Ed25519PrivateKey.generate())
    with pytest.raises(CentreRefused) as ei:
        forger.upload(b2.seq, b2.body, b2.hash)
    assert ei.value.status == 401 and ei.value.code == "bad_signature"
    assert centre.row_keys(ledger2.box_id) == {}
    drain(svc2)
    assert assert_exactly_once(centre, ledger2) == b2.rows


def test_tampered_batch_refused_with_alert(tmp_path, centre):
    ledger, svc, clock, b = _first_batch(tmp_path, centre, "tamper")
    payload, h = sbatch.parse(b.body)
    payload["tables"]["logins"]["rows"][0][4] = "Uforged"
    raw = sbatch.encode(payload)
    # Body changed after the hash was taken (the hash header is the original one).
    with pytest.raises(CentreRefused) as ei:
        svc.client.upload(b.seq, sbatch.compress(raw), b.hash)
    assert ei.value.code == "bad_hash"
    # Chain broken: a batch that does not follow the previous one.
    payload["prev_hash"] = "1" * 64
    raw = sbatch.encode(payload)
    with pytest.raises(CentreRefused) as ei:
        svc.client.upload(b.seq, sbatch.compress(raw), sbatch.batch_hash(raw))
    assert ei.value.code == "chain_broken"
    kinds = {r[0] for r in centre.appdb_rows("SELECT kind FROM alerts WHERE box_id = ?", (ledger.box_id,))}
    assert {"bad_hash", "chain_broken"} <= kinds
    assert centre.row_keys(ledger.box_id) == {}
    drain(svc)
    assert assert_exactly_once(centre, ledger) == b.rows


def test_sync_status_command_and_heartbeat(tmp_path, centre):
    ledger, svc, clock = make_box(tmp_path, centre, "hb")
    fill(ledger, clock, n_users=1, flows_per_user=5)
    svc.step()
    resp = svc.heartbeat()
    assert resp["next_seq"] == lsync.status(ledger)["last_acked_seq"] + 1
    row = centre.appdb_rows("SELECT version, lag, office FROM boxes WHERE box_id = ?", (ledger.box_id,))[0]
    assert row[0].startswith("skillspot") and json.loads(row[1])["pending_batches"] == 0 and row[2] == "Office hb"


def test_push_config_reaches_the_box_and_cli_status(tmp_path, centre):
    import subprocess
    import sys
    import tomllib
    ledger, svc, clock = make_box(tmp_path, centre, "cli")
    fill(ledger, clock, n_users=1, flows_per_user=3)
    drain(svc)
    svc.heartbeat()
    push = json.loads((svc.s.data_dir / "central_push.json").read_text())
    assert set(push) == {"config_version", "terms_version", "blocklist"}
    ex = tomllib.loads((Path(__file__).parent.parent / "examples" / "skillspot.toml").read_text())
    text = (Path(__file__).parent.parent / "examples" / "skillspot.toml").read_text()
    text = text.replace(f'id = "{ex["box"]["id"]}"', f'id = "{ledger.box_id}"')
    text = text.replace(f'data_dir = "{ex["box"]["data_dir"]}"', f'data_dir = "{svc.s.data_dir}"')
    assert '[central]\nurl = ""' in text
    text = text.replace('[central]\nurl = ""', f'[central]\nurl = "{centre.url}"')
    conf = tmp_path / "box.toml"
    conf.write_text(text)
    r = subprocess.run([sys.executable, "-m", "skillspot.cli", "-c", str(conf), "sync", "status", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["last_acked_seq"] == lsync.status(ledger)["last_acked_seq"] >= 1 and st["centre"] == centre.url
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(f'url = "{centre.url}"', 'url = "ftp://x"'))
    r = subprocess.run([sys.executable, "-m", "skillspot.cli", "-c", str(bad), "sync", "status"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "central.url" in r.stderr


def test_retention_command_while_the_service_holds_the_store(centre):
    r = centre.cmd("retention", "--dry-run")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    from central.retention import day_bounds
    assert res["dry_run"] is True
    # Only the test boxes that wrote 100+ day old data have droppable days; nothing recent.
    assert all(day_bounds(pid)[1] <= res["cutoff_ms"] for pids in res["dropped"].values() for pid in pids)
    again = json.loads(centre.cmd("retention", "--dry-run").stdout)
    assert again["dropped"] == res["dropped"]   # a dry run drops nothing
    assert centre.proc.poll() is None


def test_the_same_batch_sent_concurrently_is_stored_once(tmp_path, centre):
    ledger, svc, clock, b = _first_batch(tmp_path, centre, "race")
    results: list = []

    def send() -> None:
        c = CentreClient(centre.url, ledger.box_id, svc.client.key)
        results.append(c.upload(b.seq, b.body, b.hash)["status"])
    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["duplicate", "duplicate", "duplicate", "stored"]
    drain(svc)
    assert assert_exactly_once(centre, ledger) == b.rows
