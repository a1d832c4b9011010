"""HTTP client for the centre's box API (syncapi/openapi.yaml): signs every request.

A box whose clock is off is refused with `clock_skew` and the centre's time; the client then
corrects the timestamps of its requests (only those: the records keep the box's own times) and
retries once.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncapi import API_PREFIX
from syncapi import batch as sbatch
from syncapi import signing


class CentreUnavailable(Exception):
    """The centre could not be reached or answered 5xx: retry later."""


class CentreRefused(Exception):
    """The centre refused the request (4xx); `code` and `body` say why."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"centre refused ({status} {body.get('error')}): {body.get('message')}")
        self.status = status
        self.code = body.get("error", "")
        self.body = body


class CentreClient:
    """Signed requests to one centre for one box."""

    def __init__(self, base_url: str, box_id: str, key: Ed25519PrivateKey, timeout: float = 60,
                 verify: str | bool = True, clock: Callable[[], float] = time.time) -> None:
        self.base = base_url.rstrip("/")
        self.box_id = box_id
        self.key = key
        self.timeout = timeout
        self.verify = verify
        self.clock = clock
        self.offset_ms = 0          # centre clock minus box clock, learnt from a clock_skew refusal
        self.http = requests.Session()

    def _path(self, tail: str) -> str:
        from urllib.parse import urlsplit
        return urlsplit(self.base).path.rstrip("/") + API_PREFIX + tail

    def request(self, method: str, tail: str, body: bytes = b"", headers: dict | None = None) -> dict:
        """Send a signed request; returns the JSON answer. CentreUnavailable / CentreRefused otherwise."""
        for attempt in (0, 1):
            ts = int(self.clock() * 1000) + self.offset_ms
            h = {**(headers or {}), **signing.sign_request(self.key, method, self._path(tail), self.box_id, body, ts)}
            try:
                r = self.http.request(method, self.base + API_PREFIX + tail, data=body or None, headers=h,
                                      timeout=self.timeout, verify=self.verify)
            except requests.RequestException as exc:
                raise CentreUnavailable(f"{self.base}: {exc.__class__.__name__}: {exc}") from None
            if r.status_code >= 500:
                raise CentreUnavailable(f"{self.base}: HTTP {r.status_code}")
            try:
                doc = r.json()
            except ValueError:
                raise CentreUnavailable(f"{self.base}: HTTP {r.status_code} without JSON") from None
            if r.status_code < 400:
                return doc
            if attempt == 0 and doc.get("error") == "clock_skew" and isinstance(doc.get("server_time_ms"), int):
                self.offset_ms = doc["server_time_ms"] - int(self.clock() * 1000)
                continue
            raise CentreRefused(r.status_code, doc)
        raise AssertionError("unreachable")

    def enrol(self, code: str, office: str = "", version: str = "") -> dict:
        """Enrol this box's public key with a one-time code."""
        body = json.dumps({"code": code, "box_id": self.box_id, "public_key": signing.public_b64(self.key.public_key()),
                           "office": office, "version": version}).encode()
        return self.request("POST", "/enrol", body, {"Content-Type": "application/json"})

    def upload(self, seq: int, body: bytes, batch_hash: str) -> dict:
        """Upload one batch (gzip bytes); returns the acknowledgement."""
        return self.request("POST", f"/boxes/{self.box_id}/batches/{seq}", body,
                            {"Content-Type": sbatch.CONTENT_TYPE, sbatch.H_HASH: batch_hash})

    def heartbeat(self, doc: dict[str, Any]) -> dict:
        """Report version, health and lag."""
        return self.request("POST", f"/boxes/{self.box_id}/heartbeat", json.dumps(doc).encode(),
                            {"Content-Type": "application/json"})

    def push_config(self) -> dict:
        """Fetch what the centre pushes down (terms version, blocklist)."""
        return self.request("GET", f"/boxes/{self.box_id}/config")
