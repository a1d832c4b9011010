"""A whole centre for the admin tests: the real app (create_app), the real chDB store and app
database, boxes that enrol, upload signed batches and send heartbeats through the real box API
(so every row reaches the store through its ingest path), and admin accounts with TOTP."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts
from central.app import build_services, create_app
from central.config import parse as parse_config
from syncapi import batch as sbatch
from syncapi import signing

API = "/api/v1"
PW = "correct horse battery"
MIN = 60_000
# 2026-09-22 09:00:00 Bangkok (02:00:00 UTC): the simulated office morning.
T0 = 1_790_042_400_000


class Clock:
    """The centre's clock for a test (seconds, as Services wants it); moved by the test."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def ip_int(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


@dataclass
class Box:
    """A simulated box talking to the centre's API through the Flask test client."""

    box_id: str
    office: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0
    prev: str = sbatch.GENESIS
    next_id: int = 1

    def _send(self, centre: "Centre", method: str, path: str, body: bytes, headers: dict | None = None):
        hdrs = signing.sign_request(self.key, method, path, self.box_id, body, centre.clock.ms)
        hdrs.update(headers or {})
        resp = centre.client.open(path, method=method, data=body, headers=hdrs)
        assert resp.status_code < 300, (path, resp.status_code, resp.get_data(as_text=True))
        return resp.get_json()

    def enrol(self, centre: "Centre") -> None:
        code = centre.services.appdb.new_enrol_code("root", centre.clock.ms, 3_600_000)
        body = json.dumps({"code": code, "box_id": self.box_id, "office": self.office, "version": "0.1.0",
                           "public_key": signing.public_b64(self.key.public_key())}).encode()
        self._send(centre, "POST", f"{API}/enrol", body, {"Content-Type": "application/json"})

    def heartbeat(self, centre: "Centre", public_address: str, unsent_rows: int = 0) -> None:
        body = json.dumps({"version": "0.1.0", "box_time_ms": centre.clock.ms, "office": self.office,
                           "public_address": public_address, "health": {"disk_free_pct": 71, "ntp": "synced"},
                           "lag": {"unsent_rows": unsent_rows, "oldest_unsent_ms": None, "pending_batches": 0,
                                   "last_acked_seq": self.seq, "lag_ms": 1500}}).encode()
        self._send(centre, "POST", f"{API}/boxes/{self.box_id}/heartbeat", body, {"Content-Type": "application/json"})

    def ids(self, n: int) -> list[int]:
        out = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return out

    def upload(self, centre: "Centre", tables: dict[str, list[dict]]) -> None:
        """One batch: {table: [row dicts]} in syncapi's column order, through the real upload path."""
        from syncapi.rows import known_columns
        sections = {}
        for table, rows in tables.items():
            cols = known_columns(table)
            ids = [r["id"] for r in rows]
            sections[table] = {"from": min(ids) - 1, "to": max(ids), "columns": cols,
                               "rows": [[r.get(c) for c in cols] for r in rows]}
        self.seq += 1
        _raw, h, wire = sbatch.build(self.box_id, self.seq, self.prev, centre.clock.ms, sections)
        self._send(centre, "POST", f"{API}/boxes/{self.box_id}/batches/{self.seq}", wire,
                   {"Content-Type": sbatch.CONTENT_TYPE, sbatch.H_HASH: h})
        self.prev = h


def login_row(box: Box, at_ms: int, user: str, name: str, mac: str, ip: str) -> dict:
    return {"id": box.ids(1)[0], "at_ms": at_ms, "box_id": box.box_id, "method": "line", "line_user_id": user,
            "display_name": name, "friend": 1, "friendship_changed": 0, "consent_version": "2026-09",
            "mac": mac, "ip": ip, "expires_ms": at_ms + 8 * 3_600_000}


def lease_row(box: Box, at_ms: int, mac: str, ip: str) -> dict:
    return {"id": box.ids(1)[0], "at_ms": at_ms, "box_id": box.box_id, "event": "add", "mac": mac, "ip": ip,
            "hostname": None, "expires_ms": at_ms + 3_600_000}


def flow_row(seg_id: int, idx: int, start: int, end: int, src: str, sport: int, pub: str, pport: int,
             dst: str = "198.51.100.1", dport: int = 443) -> dict:
    return {"id": seg_id, "idx": idx, "start_ms": start, "end_ms": end, "proto": 6, "src_ip": ip_int(src),
            "src_port": sport, "pub_ip": ip_int(pub), "pub_port": pport, "dst_ip": ip_int(dst), "dst_port": dport,
            "bytes_orig": 1200, "bytes_reply": 56000, "flags": 0}


def clock_row(box: Box, at_ms: int) -> dict:
    return {"id": box.ids(1)[0], "at_ms": at_ms, "synced": 1, "offset_us": 800, "stratum": 2, "source": "ntp",
            "leap": "normal", "error": None}


class Centre:
    """The centre under test: app, services, test client, clock."""

    def __init__(self, data_dir: Path, secure_cookies: bool = True) -> None:
        self.clock = Clock(T0 - 3 * 3_600_000)
        self.config = parse_config({"data_dir": str(data_dir), "admin": {"silent_after_s": 900,
                                                                        "secure_cookies": secure_cookies}})
        self.services = build_services(self.config, clock=self.clock)
        self.app = create_app(self.config, self.services)
        self.client = self.app.test_client()
        self.secrets: dict[str, str] = {}

    def close(self) -> None:
        self.services.store.close()
        self.services.appdb.close()

    def account(self, name: str, role: str) -> str:
        """Create an account; returns its TOTP secret."""
        new = accounts.create(self.services.appdb.connect(), name, role, PW, "test", self.clock.ms)
        self.secrets[name] = new.totp_secret
        return new.totp_secret

    def code(self, name: str, ms: int | None = None) -> str:
        return pyotp.TOTP(self.secrets[name]).at((self.clock.ms if ms is None else ms) // 1000)


def populate(centre: Centre) -> dict:
    """Two offices. At Chiang Mai two phones use public 203.0.113.7 port 61000 one after the other
    (so a search with slack finds both); Khon Kaen has been silent for two hours."""
    cm = Box("box-cm01", "สำนักงานพัฒนาฝีมือแรงงานเชียงใหม่")
    kk = Box("box-kk01", "สำนักงานพัฒนาฝีมือแรงงานขอนแก่น")
    kk.enrol(centre)
    kk.heartbeat(centre, "198.51.100.77")
    login = T0 - 2 * 3_600_000
    kk.upload(centre, {"leases": [lease_row(kk, login - 5000, "02:00:00:00:0b:01", "10.9.0.50")],
                       "logins": [login_row(kk, login, "Uaaaa0000000000000000000000000003", "สมชาย ใจดี",
                                            "02:00:00:00:0b:01", "10.9.0.50")]})
    centre.clock.ms = T0
    cm.enrol(centre)
    a_login, b_login = T0 - 30 * MIN, T0 - 20 * MIN
    cm.upload(centre, {
        "leases": [lease_row(cm, a_login - 4000, "02:00:00:00:0a:01", "10.9.0.10"),
                   lease_row(cm, b_login - 4000, "02:00:00:00:0a:02", "10.9.0.11")],
        "logins": [login_row(cm, a_login, "Uaaaa0000000000000000000000000001", "สมชาย ใจดี", "02:00:00:00:0a:01",
                             "10.9.0.10"),
                   login_row(cm, b_login, "Ubbbb0000000000000000000000000002", "Nok", "02:00:00:00:0a:02",
                             "10.9.0.11")],
        "clock_samples": [clock_row(cm, T0 - 31 * MIN + i * MIN) for i in range(0, 30, 4)],
    })
    cm.upload(centre, {"flow_segments": [
        # A's flow: 08:50:00-08:50:40 Bangkok (01:50Z) through public port 61000
        flow_row(1, 0, T0 - 10 * MIN, T0 - 10 * MIN + 40_000, "10.9.0.10", 40000, "203.0.113.7", 61000),
        # B's flow reuses the same public port 50 s later
        flow_row(1, 1, T0 - 10 * MIN + 90_000, T0 - 10 * MIN + 95_000, "10.9.0.11", 40001, "203.0.113.7", 61000,
                 "198.51.100.9", 80),
        # unrelated traffic on other ports
        *[flow_row(1, 2 + i, T0 - 15 * MIN + i * 1000, T0 - 15 * MIN + i * 1000 + 500, "10.9.0.10", 41000 + i,
                   "203.0.113.7", 62000 + i) for i in range(20)],
    ]})
    cm.heartbeat(centre, "203.0.113.7")
    return {"cm": cm, "kk": kk, "flow_a_ms": T0 - 10 * MIN, "flow_b_ms": T0 - 10 * MIN + 90_000}
