"""Exports for officials: CSV (UTF-8 with BOM, for Excel and Thai) and JSON Lines, with a
manifest (row counts, SHA-256 of every file, the chain head) signed by the box key.

Every export is itself recorded in the event log (who, when, what, file hashes) and sealed.
"""
from __future__ import annotations

import bisect
import csv
import datetime as dt
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.clock import ClockHistory
from ledger.db import Ledger, LedgerError
from ledger.flows import flows_between, ip_int
from ledger.query import flow_dict, sessions
from ledger.records import log_event
from ledger.seal import chain_head, key_id, seal

SESSION_FIELDS = ("box_id", "office", "login_id", "line_user_id", "display_name", "consent_version", "method", "mac",
                  "ip", "lease_start", "lease_end", "login", "logout", "logout_reason", "end", "duration_s",
                  "bytes_orig", "bytes_reply", "clock")
FLOW_FIELDS = ("box_id", "office", "start", "end", "proto", "src_ip", "src_port", "pub_ip", "pub_port", "dst_ip",
               "dst_port", "bytes_orig", "bytes_reply", "end_unknown", "login_id", "mac", "line_user_id", "clock")
MANIFEST = "manifest.json"


def iso(ms: int | None) -> str:
    """Unix ms as ISO-8601 UTC with milliseconds ('' for None)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Writer:
    """Writes the same rows to NAME.csv (BOM) and NAME.jsonl."""

    def __init__(self, out: Path, name: str, fields: tuple[str, ...]) -> None:
        self.paths = (out / f"{name}.csv", out / f"{name}.jsonl")
        self.csv_fh = self.paths[0].open("w", encoding="utf-8-sig", newline="")
        self.json_fh = self.paths[1].open("w", encoding="utf-8")
        self.csv = csv.DictWriter(self.csv_fh, fieldnames=fields)
        self.csv.writeheader()
        self.rows = 0

    def write(self, row: dict) -> None:
        self.csv.writerow(row)
        self.json_fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.rows += 1

    def close(self) -> dict:
        self.csv_fh.close()
        self.json_fh.close()
        return {p.name: {"rows": self.rows, "sha256": _sha256(p), "bytes": p.stat().st_size} for p in self.paths}


def canonical(manifest: dict) -> bytes:
    """The bytes the manifest signature covers: the manifest without its signature, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def export(ledger: Ledger, key: Ed25519PrivateKey, out_dir: str | Path, start_ms: int, end_ms: int, admin: str,
           office: str, mac: str | None = None, line_user_id: str | None = None, ip: str | None = None) -> dict:
    """Write sessions and flows for [start_ms, end_ms] (optionally one MAC / LINE user / private IP).

    Returns the signed manifest. The directory must be new or empty, so nothing is overwritten.
    """
    if not admin.strip():
        raise LedgerError("an export needs a named admin (--admin NAME)")
    if end_ms < start_ms:
        raise LedgerError("the export window ends before it starts")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise LedgerError(f"{out} is not empty; exports never overwrite. Fix: choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    if ip is not None:
        ip_int(ip)
    seal(ledger, key)  # the manifest's chain head then covers everything exported
    head = chain_head(ledger)
    clock = ClockHistory(ledger, start_ms, end_ms)

    sess = sessions(ledger, start_ms, end_ms, mac=mac, line_user_id=line_user_id)
    if ip is not None:
        sess = [s for s in sess if s["ip"] == ip]
    filtered = bool(mac or line_user_id or ip)
    by_ip: dict[str, list[dict]] = {}
    for s in sess:
        by_ip.setdefault(s["ip"], []).append(s)
        s["bytes_orig"] = s["bytes_reply"] = 0
    starts = {k: [s["login_ms"] for s in v] for k, v in by_ip.items()}

    def owner(src: str, t: int) -> dict | None:
        lst = by_ip.get(src)
        if not lst:
            return None
        i = bisect.bisect_right(starts[src], t) - 1
        return lst[i] if i >= 0 and t <= lst[i]["end_ms"] else None

    flows_w = _Writer(out, "flows", FLOW_FIELDS)
    if filtered:
        sources = [(s["ip"], max(start_ms, s["login_ms"]), min(end_ms, s["end_ms"])) for s in sess]
        if ip is not None and not sess:
            sources = [(ip, start_ms, end_ms)]
    else:
        sources = [(None, start_ms, end_ms)]
    for src_ip, a, b in sources:
        for f in sorted(flows_between(ledger, a, b, None if src_ip is None else ip_int(src_ip)),
                        key=lambda f: (f.start_ms, f.src_ip, f.src_port)):
            d = flow_dict(f)
            s = owner(d["src_ip"], f.start_ms)
            if s is not None:
                s["bytes_orig"] += f.bytes_orig
                s["bytes_reply"] += f.bytes_reply
            flows_w.write({"box_id": ledger.box_id, "office": office, "start": iso(f.start_ms), "end": iso(f.end_ms),
                           **{k: d[k] for k in ("proto", "src_ip", "src_port", "pub_ip", "pub_port", "dst_ip",
                                                "dst_port", "bytes_orig", "bytes_reply", "end_unknown")},
                           "login_id": s["login_id"] if s else "", "mac": s["mac"] if s else "",
                           "line_user_id": s["line_user_id"] if s else "", "clock": clock.label(f.start_ms)})
    files = flows_w.close()
    sess_w = _Writer(out, "sessions", SESSION_FIELDS)
    for s in sess:
        sess_w.write({"box_id": s["box_id"], "office": office, "login_id": s["login_id"],
                      "line_user_id": s["line_user_id"], "display_name": s["display_name"],
                      "consent_version": s["consent_version"] or "", "method": s["method"], "mac": s["mac"],
                      "ip": s["ip"], "lease_start": iso(s["lease_start_ms"]), "lease_end": iso(s["lease_end_ms"]),
                      "login": iso(s["login_ms"]), "logout": iso(s["logout_ms"]),
                      "logout_reason": s["logout_reason"] or "", "end": iso(s["end_ms"]),
                      "duration_s": s["duration_ms"] // 1000, "bytes_orig": s["bytes_orig"],
                      "bytes_reply": s["bytes_reply"], "clock": s["clock"]})
    files.update(sess_w.close())
    manifest = {
        "format": "skillspot-ledger-export-v1", "box_id": ledger.box_id, "office": office,
        "created": iso(ledger.now_ms()), "admin": admin,
        "window": {"start": iso(start_ms), "end": iso(end_ms), "start_ms": start_ms, "end_ms": end_ms},
        "filter": {"mac": mac, "line_user_id": line_user_id, "ip": ip},
        "files": files, "chain_head": head, "key_id": key_id(key.public_key()),
    }
    manifest["signature"] = key.sign(canonical(manifest)).hex()
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log_event(ledger, "export", admin, out_dir=str(out.resolve()), window=manifest["window"], filter=manifest["filter"],
              files=files, manifest_sha256=_sha256(out / MANIFEST), chain_head=head)
    seal(ledger, key)
    return manifest


def verify_export(out_dir: str | Path, public_key: Ed25519PublicKey) -> list[str]:
    """Check an export directory against its manifest; returns the problems (empty: intact)."""
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{out / MANIFEST}: unreadable ({exc})"]
    problems = []
    try:
        public_key.verify(bytes.fromhex(manifest.get("signature", "")), canonical(manifest))
    except (InvalidSignature, ValueError):
        problems.append("manifest signature invalid (manifest changed or another key)")
    for name, info in manifest.get("files", {}).items():
        path = out / name
        if not path.exists():
            problems.append(f"{name}: missing")
            continue
        if _sha256(path) != info["sha256"]:
            problems.append(f"{name}: SHA-256 differs from the manifest (file changed)")
        with path.open(encoding="utf-8-sig" if name.endswith(".csv") else "utf-8", newline="") as fh:
            rows = sum(1 for _ in csv.DictReader(fh)) if name.endswith(".csv") else sum(1 for _ in fh)
        if rows != info["rows"]:
            problems.append(f"{name}: {rows} rows, manifest says {info['rows']}")
    return problems
