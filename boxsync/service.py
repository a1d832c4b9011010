"""The sync service: form batches from the ledger, send them oldest first, record receipts.

- Batches by size (batch_rows) and time (a smaller batch once the oldest unsent row is
  batch_seconds old); the backlog after days offline goes out oldest first, full batches
  back to back.
- Retries: exponential backoff with full jitter (a random wait up to min(cap, base * 2^n)),
  so a thousand boxes coming back after an outage do not hammer the centre in step.
- A batch counts as acknowledged only with a receipt signed by the centre's key pinned at
  enrolment; only then may retention delete what it covers.
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncapi import signing

from boxsync.client import CentreClient, CentreRefused, CentreUnavailable
from ledger import sync as lsync
from ledger.db import Ledger, LedgerError
from ledger.flows import latest_public_address

STATE_FILE = "sync_centre.json"
PUSH_FILE = "central_push.json"
KEY_FILE = "sync_ed25519.pem"
VERSION = "skillspot-0.1.0"


class SyncError(Exception):
    """Sync cannot go on without a person (bad receipt, refused enrolment, ledger changed)."""


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The box's sync key, made (mode 0600) on first use."""
    try:
        return signing.load_or_create_key(path)
    except ValueError as exc:
        raise SyncError(str(exc)) from None


@dataclass
class Backoff:
    """Exponential backoff with full jitter."""

    base_s: float = 1.0
    cap_s: float = 300.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Seconds to wait after one more failure."""
        self.failures += 1
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(self.failures, 30)))

    def reset(self) -> None:
        """A success: start again from the base."""
        self.failures = 0


@dataclass
class SyncSettings:
    """What the service needs from [central] (passed down, never read from the file here)."""

    url: str
    data_dir: Path
    office: str = ""
    enrol_code: str = ""
    key_file: Path | None = None
    ca_file: Path | None = None
    batch_rows: int = 50_000
    batch_seconds: int = 30
    heartbeat_seconds: int = 60
    backoff_max_seconds: int = 300
    timeout_seconds: int = 60


def make_client(settings: "SyncSettings", box_id: str, clock: Callable[[], float] = time.time) -> CentreClient:
    """A client for the configured centre, signing with this box's sync key (made on first use)."""
    key = load_or_create_key(settings.key_file or settings.data_dir / KEY_FILE)
    verify: str | bool = str(settings.ca_file) if settings.ca_file else True
    return CentreClient(settings.url, box_id, key, settings.timeout_seconds, verify, clock)


def enrol(settings: "SyncSettings", box_id: str, client: CentreClient | None = None,
          clock: Callable[[], float] = time.time) -> tuple[dict, bool]:
    """Enrol this box with the one-time code unless it already is: (enrolment state, newly enrolled).

    Needs no ledger, so `skillspot sync enrol` can run during installation before the sync
    service starts (the service calls it too). Raises SyncError, CentreRefused (bad_code: wrong,
    used or expired code) or CentreUnavailable."""
    state_path = settings.data_dir / STATE_FILE
    try:
        return json.loads(state_path.read_text()), False
    except FileNotFoundError:
        pass
    if not settings.enrol_code:
        raise SyncError("this box is not enrolled at the centre. Fix: set [central] enrol_code to the code "
                        "a central admin made (`central enrol-code --box BOX`)")
    client = client or make_client(settings, box_id, clock)
    resp = client.enrol(settings.enrol_code, settings.office, VERSION)
    st = {"centre_public_key": resp["centre_public_key"], "box_id": box_id,
          "enrolled_ms": int(clock() * 1000), "url": settings.url, "key_id": resp["key_id"]}
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1))
    os.replace(tmp, state_path)
    return st, True


class SyncService:
    """One box's sync loop; `step()` does one round, `run()` loops until stopped."""

    def __init__(self, ledger: Ledger, settings: SyncSettings, clock: Callable[[], float] = time.time,
                 health: Callable[[], dict] | None = None) -> None:
        self.ledger = ledger
        self.s = settings
        self.clock = clock
        self.health = health or (lambda: {})
        self.client = make_client(settings, ledger.box_id, clock)
        self.state_path = settings.data_dir / STATE_FILE
        self.backoff = Backoff(cap_s=settings.backoff_max_seconds)
        self.last_heartbeat = 0.0
        self.last_error = ""
        self.centre_key = None
        self._fresh: lsync.FormedBatch | None = None
        self.stop = threading.Event()

    # ---- enrolment -----------------------------------------------------------------------
    def ensure_enrolled(self) -> None:
        """Enrol with the configured code unless already enrolled; pins the centre's key."""
        st, _ = enrol(self.s, self.ledger.box_id, self.client, self.clock)
        self.centre_key = signing.load_public_b64(st["centre_public_key"])

    # ---- one round -----------------------------------------------------------------------
    def _due(self) -> bool:
        un = lsync.unsent(self.ledger)
        if not un["rows"]:
            return False
        if un["rows"] >= self.s.batch_rows:
            return True
        oldest = un["oldest_ms"]
        return oldest is None or self.ledger.now_ms() - oldest >= self.s.batch_seconds * 1000

    def send_pending(self) -> int:
        """Send every unacknowledged batch, oldest first, forming new ones while due. Returns batches acked."""
        acked = 0
        while not self.stop.is_set():
            pend = lsync.pending_seqs(self.ledger)
            if not pend:
                if not self._due():
                    return acked
                self._fresh = lsync.form_batch(self.ledger, self.s.batch_rows)
                if self._fresh is None:
                    return acked
                continue
            # A batch just formed is sent as formed; a retry rebuilds it from the ledger (same bytes).
            fresh, self._fresh = self._fresh, None
            b = fresh if fresh is not None and fresh.seq == pend[0] else lsync.rebuild(self.ledger, pend[0])
            try:
                ack = self.client.upload(b.seq, b.body, b.hash)
            except CentreRefused as exc:
                if exc.code == "out_of_order" and isinstance(exc.body.get("expected_seq"), int):
                    exp = exc.body["expected_seq"]
                    if exp > b.seq:
                        # The centre is ahead of our acks (an ack was lost): it has b.seq..exp-1.
                        # Re-send b.seq: the centre answers "duplicate" with a receipt.
                        raise SyncError(f"centre expects batch {exp} but says it lacks {b.seq}'s receipt; "
                                        "inconsistent state, see the centre's alerts") from exc
                    raise SyncError(f"centre expects batch {exp}, this box has acknowledged up to "
                                    f"{lsync.last_acked_seq(self.ledger)} (centre lost batches?). Fix: restore the "
                                    "centre's data or re-enrol") from exc
                raise
            if ack.get("hash") != b.hash or ack.get("seq") != b.seq or not signing.verify_receipt(
                    self.centre_key, ack.get("receipt", ""), self.ledger.box_id, b.seq, b.hash):
                raise SyncError(f"batch {b.seq}: the centre's receipt does not verify with the pinned centre key")
            lsync.record_ack(self.ledger, b.seq, ack["receipt"], ack.get("received_ms"))
            acked += 1
        return acked

    def public_address(self) -> str | None:
        """The box's WAN address as its NAT writes it into the flows (None before the first flow)."""
        try:
            return latest_public_address(self.ledger)
        except (sqlite3.Error, ValueError):
            return None  # a heartbeat without the address beats no heartbeat

    def heartbeat(self) -> dict:
        """Send version, health, lag and the public address the flows carry, now."""
        st = lsync.status(self.ledger)
        doc = {"version": VERSION, "box_time_ms": int(self.clock() * 1000), "office": self.s.office,
               "public_address": self.public_address(), "health": {**self.health(), "sync_error": self.last_error},
               "lag": {"unsent_rows": st["unsent_rows"] + st["pending_rows"], "oldest_unsent_ms": st["oldest_unsent_ms"],
                       "pending_batches": st["pending_batches"], "last_acked_seq": st["last_acked_seq"],
                       "lag_ms": st["lag_ms"]}}
        resp = self.client.heartbeat(doc)
        if resp.get("config_version", 0) != self._push_version():
            self.fetch_push_config()
        return resp

    def _push_version(self) -> int:
        try:
            return json.loads((self.s.data_dir / PUSH_FILE).read_text()).get("config_version", 0)
        except (FileNotFoundError, ValueError):
            return -1  # never fetched: fetch once

    def fetch_push_config(self) -> dict:
        """Fetch what the centre pushes down (terms version, blocklist) into data_dir/central_push.json,
        written atomically, for the portal to read."""
        doc = self.client.push_config()
        tmp = self.s.data_dir / (PUSH_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1))
        os.replace(tmp, self.s.data_dir / PUSH_FILE)
        return doc

    def step(self) -> float:
        """One round: enrol if needed, send what is due, heartbeat when due. Returns seconds to wait."""
        try:
            if self.centre_key is None:
                self.ensure_enrolled()
            self.send_pending()
            now = self.clock()
            if now - self.last_heartbeat >= self.s.heartbeat_seconds:
                self.heartbeat()
                self.last_heartbeat = now
            self.backoff.reset()
            self.last_error = ""
            return min(self.s.batch_seconds, self.s.heartbeat_seconds, 5)
        except (CentreUnavailable, CentreRefused, SyncError, LedgerError) as exc:
            self.last_error = str(exc)
            return self.backoff.next_delay()

    def run(self, log: Callable[[str], None] = print) -> None:
        """Loop until stop is set (SIGTERM)."""
        while not self.stop.is_set():
            wait = self.step()
            if self.last_error:
                log(f"skillspot sync: {self.last_error}; retrying in {wait:.1f} s")
            self.stop.wait(wait)
