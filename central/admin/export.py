"""Exports made at the centre, in the box's `ledger export` format (skillspot-ledger-export-v1):
sessions.csv / flows.csv (UTF-8 with BOM, for Excel and Thai), the same rows as .jsonl, and a
manifest.json with row counts and SHA-256 of every file, signed with the centre's own Ed25519 key
over the canonical JSON of the manifest without its signature. So the box's `verify_export`, given
the centre's public key, checks a centre export too.

The field lists and the canonical form are copied from ledger/export.py (central never imports box
packages); tests/test_central_admin.py checks they stay equal.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from syncapi.signing import load_or_create_key  # noqa: F401 (the centre's keys; re-exported)
from central.admin.timefmt import iso

SESSION_FIELDS = ("box_id", "office", "login_id", "line_user_id", "display_name", "consent_version", "method", "mac",
                  "ip", "lease_start", "lease_end", "login", "logout", "logout_reason", "end", "duration_s",
                  "bytes_orig", "bytes_reply", "clock")
FLOW_FIELDS = ("box_id", "office", "start", "end", "proto", "src_ip", "src_port", "pub_ip", "pub_port", "dst_ip",
               "dst_port", "bytes_orig", "bytes_reply", "end_unknown", "login_id", "mac", "line_user_id", "clock")
TIME_FIELDS = ("start", "end", "lease_start", "lease_end", "login", "logout")
MANIFEST = "manifest.json"
FORMAT = "skillspot-ledger-export-v1"


def key_id(pub: Ed25519PublicKey) -> str:
    """A short fingerprint of the public key (as the box computes it)."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(key: Ed25519PrivateKey) -> str:
    """The public half, PEM, for officials who verify an export."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def canonical(manifest: dict) -> bytes:
    """The bytes the manifest signature covers: the manifest without its signature, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cell(row: dict, field: str):
    """A row's value for an export column: the store may give times as *_ms integers."""
    if field in row and row[field] is not None:
        v = row[field]
        return iso(v) if field in TIME_FIELDS and isinstance(v, int) else v
    if field in TIME_FIELDS:
        return iso(row.get(field + "_ms"))
    if field == "duration_s" and row.get("duration_ms") is not None:
        return int(row["duration_ms"]) // 1000
    return ""


def _write(out: Path, name: str, fields: tuple[str, ...], rows: list[dict], office: str) -> dict:
    paths = (out / f"{name}.csv", out / f"{name}.jsonl")
    with paths[0].open("w", encoding="utf-8-sig", newline="") as cfh, paths[1].open("w", encoding="utf-8") as jfh:
        w = csv.DictWriter(cfh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            rec = {f: _cell(r, f) for f in fields}
            if not rec["office"]:
                rec["office"] = office
            w.writerow(rec)
            jfh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
    return {p.name: {"rows": len(rows), "sha256": _sha256(p), "bytes": p.stat().st_size} for p in paths}


def write_export(out_dir: Path, key: Ed25519PrivateKey, rows: dict[str, list[dict]], box_id: str, office: str,
                 start_ms: int, end_ms: int, admin: str, now_ms: int, case_ref: str | None,
                 chain_head: dict | None) -> dict:
    """Write one box's sessions and flows for [start_ms, end_ms] into a new directory; return the
    signed manifest. The manifest adds who exported (the centre), under which case."""
    if not admin.strip():
        raise ValueError("an export needs a named admin")
    if end_ms < start_ms:
        raise ValueError("the export window ends before it starts")
    out_dir.mkdir(parents=True, exist_ok=False)  # exports never overwrite
    flows = sorted(rows.get("flows", []), key=lambda f: (f.get("start_ms") or 0, f.get("src_ip") or "",
                                                         f.get("src_port") or 0))
    files = _write(out_dir, "flows", FLOW_FIELDS, flows, office)
    files.update(_write(out_dir, "sessions", SESSION_FIELDS, rows.get("sessions", []), office))
    manifest = {
        "format": FORMAT, "box_id": box_id, "office": office, "created": iso(now_ms), "admin": admin,
        "window": {"start": iso(start_ms), "end": iso(end_ms), "start_ms": start_ms, "end_ms": end_ms},
        "filter": {"mac": None, "line_user_id": None, "ip": None},
        "files": files, "chain_head": chain_head, "key_id": key_id(key.public_key()),
        "exported_by": "centre", "case_ref": case_ref,
    }
    manifest["signature"] = key.sign(canonical(manifest)).hex()
    (out_dir / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
    return manifest


def zip_dir(out_dir: Path) -> Path:
    """The export directory as one zip beside it (what the browser downloads)."""
    target = out_dir.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(out_dir.iterdir()):
            zf.write(p, arcname=f"{out_dir.name}/{p.name}")
    return target


def keep_manifest_only(out_dir: Path, archive: Path) -> Path:
    """After the download: remove the data files and the zip, keep NAME.manifest.json beside them."""
    kept = out_dir.parent / f"{out_dir.name}.manifest.json"
    os.replace(out_dir / MANIFEST, kept)
    for p in out_dir.iterdir():
        p.unlink()
    out_dir.rmdir()
    archive.unlink()
    return kept
