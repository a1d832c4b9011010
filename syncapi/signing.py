"""Canonical request signing between a box and the centre (Ed25519).

A box signs every request with its own key (made on the box; the centre keeps only the
public key, received at enrolment). The signed string binds the method, the path, the box,
a timestamp, a single-use nonce and the SHA-256 of the exact body bytes:

    skillspot-request-v1\\n{METHOD}\\n{PATH}\\n{box_id}\\n{timestamp_ms}\\n{nonce}\\n{sha256(body)}

so a changed byte, another path, another box, a stale timestamp or a reused nonce is refused.
The replay window bounds how long the centre must remember nonces. Request timestamps are a
transport matter: a box whose clock is off learns the centre's time from a refusal
(`server_time_ms`) and corrects only its request timestamps; its records keep its own times.

The centre signs its acknowledgements (receipts) with its own key so that a box deletes data
only on a receipt it can check (the centre's public key is pinned at enrolment).
"""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SCHEME = "skillspot-request-v1"
RECEIPT_SCHEME = "skillspot-receipt-v1"
H_BOX = "X-Skillspot-Box"
H_TIME = "X-Skillspot-Timestamp"
H_NONCE = "X-Skillspot-Nonce"
H_SIG = "X-Skillspot-Signature"
REPLAY_WINDOW_MS = 5 * 60 * 1000
NONCE_BYTES = 16


class AuthError(Exception):
    """A request that fails authentication; `code` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def body_hash(body: bytes) -> str:
    """SHA-256 of the exact body bytes, hex."""
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, path: str, box_id: str, timestamp_ms: int, nonce: str, body: bytes) -> bytes:
    """The bytes a request signature covers."""
    return "\n".join((SCHEME, method.upper(), path, box_id, str(timestamp_ms), nonce, body_hash(body))).encode()


def public_b64(pub: Ed25519PublicKey) -> str:
    """A public key as base64 of its 32 raw bytes (what enrolment sends)."""
    return base64.b64encode(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def load_public_b64(text: str) -> Ed25519PublicKey:
    """The inverse of public_b64; ValueError if it is not a 32-byte key."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("public key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_fingerprint(pub: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (first 16 hex of SHA-256 of the raw bytes)."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_request(key: Ed25519PrivateKey, method: str, path: str, box_id: str, body: bytes,
                 timestamp_ms: int, nonce: str | None = None) -> dict[str, str]:
    """The four headers that authenticate one request."""
    nonce = nonce or secrets.token_hex(NONCE_BYTES)
    sig = key.sign(canonical(method, path, box_id, timestamp_ms, nonce, body))
    return {H_BOX: box_id, H_TIME: str(timestamp_ms), H_NONCE: nonce, H_SIG: base64.b64encode(sig).decode()}


@dataclass(frozen=True)
class SignedRequest:
    """The authentication headers of a request, parsed."""

    box_id: str
    timestamp_ms: int
    nonce: str
    signature: bytes


def parse_headers(headers) -> SignedRequest:
    """Read the authentication headers (any mapping with .get); AuthError if one is missing or bad."""
    missing = [h for h in (H_BOX, H_TIME, H_NONCE, H_SIG) if not headers.get(h)]
    if missing:
        raise AuthError("unsigned", f"missing header(s): {', '.join(missing)}")
    try:
        ts = int(headers.get(H_TIME))
    except ValueError:
        raise AuthError("bad_timestamp", f"{H_TIME} must be Unix milliseconds") from None
    nonce = headers.get(H_NONCE)
    if not (16 <= len(nonce) <= 64) or any(c not in "0123456789abcdef" for c in nonce):
        raise AuthError("bad_nonce", f"{H_NONCE} must be 16 to 64 lowercase hex digits")
    try:
        sig = base64.b64decode(headers.get(H_SIG), validate=True)
    except ValueError:
        raise AuthError("bad_signature", f"{H_SIG} is not base64") from None
    return SignedRequest(headers.get(H_BOX), ts, nonce, sig)


def verify_request(pub: Ed25519PublicKey, req: SignedRequest, method: str, path: str, body: bytes,
                   now_ms: int, window_ms: int = REPLAY_WINDOW_MS) -> None:
    """Check the signature and the timestamp window; AuthError otherwise.

    The caller must also check that the nonce was not seen within the window (it keeps the store).
    """
    if abs(now_ms - req.timestamp_ms) > window_ms:
        raise AuthError("clock_skew", f"request timestamp {req.timestamp_ms} is {now_ms - req.timestamp_ms} ms "
                        f"from the centre's clock (window {window_ms} ms)")
    try:
        pub.verify(req.signature, canonical(method, path, req.box_id, req.timestamp_ms, req.nonce, body))
    except InvalidSignature:
        raise AuthError("bad_signature", "signature does not match this box's key and this request") from None


def receipt_bytes(box_id: str, seq: int, batch_hash: str) -> bytes:
    """What the centre's receipt for one stored batch signs."""
    return f"{RECEIPT_SCHEME}\n{box_id}\n{seq}\n{batch_hash}".encode()


def sign_receipt(key: Ed25519PrivateKey, box_id: str, seq: int, batch_hash: str) -> str:
    """The centre's signed receipt (base64) that batch `seq` with `batch_hash` is stored."""
    return base64.b64encode(key.sign(receipt_bytes(box_id, seq, batch_hash))).decode()


def verify_receipt(pub: Ed25519PublicKey, receipt: str, box_id: str, seq: int, batch_hash: str) -> bool:
    """True if `receipt` is the centre's signature over this batch."""
    try:
        pub.verify(base64.b64decode(receipt, validate=True), receipt_bytes(box_id, seq, batch_hash))
        return True
    except (InvalidSignature, ValueError):
        return False


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key kept as PEM (PKCS#8) at `path`, made with mode 0600 when missing.
    The box's sync key, the centre's receipt key and its export key are all kept this way.
    Raises ValueError when the file holds something else."""
    path = Path(path)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key. Fix: move it away and a new key is made")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return key
