"""The API between a box and the centre: the one package both sides import.

- `openapi.yaml`: the HTTP contract (enrol, upload batch, heartbeat, push-down config).
- `signing`: canonical request signing and verification (Ed25519, timestamp, nonce, body hash).
- `batch`: the upload batch format (gap-free seq, previous batch hash, gzip-compressed JSON).
- `rows`: the row schemas of every table a box sends.

Pure Python plus `cryptography`; it imports nothing else of ours, so the box stays lean.
"""
from pathlib import Path

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
API_PREFIX = "/api/v1"
