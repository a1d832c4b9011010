"""The box API blueprint (/api/v1): enrol, upload batch, heartbeat, push-down config.

Every request from a box is signed with its Ed25519 key (syncapi.signing); the enrolment is
signed with the key being enrolled and authorised by a one-time code. Batches are idempotent:
a duplicate is acknowledged and stored once; a batch whose hash or chain does not match is
refused and raises an alert. The acknowledgement carries a receipt signed by the centre's key.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

import jsonschema
import yaml
from flask import Blueprint, current_app, jsonify, request

from syncapi import API_PREFIX, OPENAPI_PATH
from syncapi import batch as sbatch
from syncapi import signing
from syncapi.rows import check_rows

from central.store import StoreError


def _schemas() -> dict[str, jsonschema.protocols.Validator]:
    doc = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    comps = doc["components"]["schemas"]
    out = {}
    for name in ("EnrolRequest", "Heartbeat", "BatchPayload"):
        # The component refers to siblings as #/components/schemas/X: embed them under that path.
        out[name] = jsonschema.Draft202012Validator({**comps[name], "components": {"schemas": comps}})
    return out


def _err(status: int, code: str, message: str, **extra: Any):
    body = {"error": code, "message": message, **extra}
    return jsonify(body), status


def create_blueprint() -> Blueprint:
    """The blueprint; it reads config and services from current_app.extensions['skillspot_central']."""
    bp = Blueprint("box_api", __name__, url_prefix=API_PREFIX)
    validators = _schemas()

    def ctx():
        return current_app.extensions["skillspot_central"]

    def now_ms() -> int:
        return int(ctx().services.clock() * 1000)

    def window_ms() -> int:
        return ctx().config.api.replay_window_s * 1000

    def auth(path_box: str | None) -> tuple[dict | None, Any]:
        """(box row, None) for a correctly signed request of an enrolled box, else (None, error response)."""
        svc = ctx().services
        now = now_ms()
        body = request.get_data(cache=True)
        try:
            sreq = signing.parse_headers(request.headers)
        except signing.AuthError as exc:
            return None, _err(401, exc.code, str(exc), server_time_ms=now)
        if path_box is not None and sreq.box_id != path_box:
            return None, _err(403, "box_mismatch", f"signed as {sreq.box_id!r} but the path names {path_box!r}")
        box = svc.appdb.box(sreq.box_id)
        if box is None:
            svc.appdb.alert("unknown_box", f"request from unknown box {sreq.box_id!r} at {request.remote_addr}", sreq.box_id, now)
            return None, _err(401, "unknown_box", f"box {sreq.box_id!r} is not enrolled. Fix: enrol it with a code "
                              "from a central admin (`skillspot sync enrol`)", server_time_ms=now)
        if box["revoked_ms"]:
            return None, _err(403, "revoked", f"box {sreq.box_id!r} was revoked")
        try:
            signing.verify_request(signing.load_public_b64(box["public_key"]), sreq, request.method,
                                   request.script_root + request.path, body, now, window_ms())
        except signing.AuthError as exc:
            if exc.code == "bad_signature":
                svc.appdb.alert("bad_signature", f"{request.method} {request.path} from {request.remote_addr}: {exc}",
                                sreq.box_id, now)
            return None, _err(401, exc.code, str(exc), server_time_ms=now)
        if not svc.appdb.check_nonce(sreq.box_id, sreq.nonce, now, window_ms()):
            svc.appdb.alert("replayed_request", f"{request.method} {request.path}: nonce {sreq.nonce} reused", sreq.box_id, now)
            return None, _err(401, "replayed_nonce", "this request was already received (replay refused)",
                              server_time_ms=now)
        svc.appdb.connect().execute("UPDATE boxes SET last_seen_ms = ?, seen_address = ? WHERE box_id = ?",
                                    (now, request.remote_addr, sreq.box_id))
        return box, None

    @bp.post("/enrol")
    def enrol():
        svc = ctx().services
        now = now_ms()
        body = request.get_data(cache=True)
        try:
            doc = json.loads(body)
        except ValueError:
            return _err(400, "bad_request", "body must be JSON")
        errors = sorted(validators["EnrolRequest"].iter_errors(doc), key=str)
        if errors:
            return _err(400, "bad_request", f"enrolment request: {errors[0].message}")
        try:
            sreq = signing.parse_headers(request.headers)
            pub = signing.load_public_b64(doc["public_key"])
        except (signing.AuthError, ValueError) as exc:
            return _err(401, getattr(exc, "code", "bad_signature"), str(exc), server_time_ms=now)
        if sreq.box_id != doc["box_id"]:
            return _err(403, "box_mismatch", "the signing header and the body name different boxes")
        try:
            # Proof of possession: the request is signed by the key being enrolled.
            signing.verify_request(pub, sreq, "POST", request.script_root + request.path, body, now, window_ms())
        except signing.AuthError as exc:
            return _err(401, exc.code, str(exc), server_time_ms=now)
        if not svc.appdb.check_nonce(sreq.box_id, sreq.nonce, now, window_ms()):
            return _err(401, "replayed_nonce", "this request was already received (replay refused)", server_time_ms=now)
        conn = svc.appdb.connect()
        code_hash = hashlib.sha256(doc["code"].strip().lower().encode()).hexdigest()
        with svc.appdb.batch_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                code = conn.execute("SELECT id, box_id, expires_ms, used_ms, used_by_box, used_key FROM enrol_codes "
                                    "WHERE code_hash = ?", (code_hash,)).fetchone()
                status, resp = _enrol_tx(conn, code, doc, pub, now)
                if status >= 400:
                    svc.appdb.alert("enrol_refused", f"{doc['box_id']} from {request.remote_addr}: {resp['error']}",
                                    doc["box_id"], now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if status >= 400:
            return _err(status, resp["error"], resp["message"])
        box = svc.appdb.box(doc["box_id"])
        return jsonify({"box_id": doc["box_id"], "key_id": signing.key_fingerprint(pub),
                        "centre_public_key": signing.public_b64(svc.key.public_key()), "server_time_ms": now,
                        "next_seq": box["last_seq"] + 1, "last_hash": box["last_hash"]}), status

    @bp.post("/boxes/<box_id>/batches/<int:seq>")
    def upload(box_id: str, seq: int):
        svc = ctx().services
        cfg = ctx().config
        if (request.content_length or 0) > cfg.api.max_batch_mb << 20:
            return _err(413, "too_large", f"batch larger than {cfg.api.max_batch_mb} MB. Fix: lower the box's "
                        "[central] batch_rows")
        box, error = auth(box_id)
        if error:
            return error
        now = now_ms()
        body = request.get_data(cache=True)
        try:
            payload, h = sbatch.parse(body)
        except sbatch.BatchError as exc:
            svc.appdb.alert("bad_batch", f"batch {seq}: {exc}", box_id, now)
            return _err(413 if exc.code == "too_large" else 400, exc.code, str(exc))
        claimed = request.headers.get(sbatch.H_HASH, "")
        if claimed != h:
            svc.appdb.alert("bad_hash", f"batch {seq}: content hashes to {h}, the box said {claimed}", box_id, now)
            return _err(400, "bad_hash", f"batch content hashes to {h}, not {claimed!r} (changed after it was made)")
        if payload["box_id"] != box_id or payload["seq"] != seq:
            svc.appdb.alert("bad_batch", f"batch {seq}: names box {payload['box_id']} seq {payload['seq']}", box_id, now)
            return _err(400, "bad_body", "the batch names another box or seq than the URL")
        for table, sec in payload["tables"].items():
            problem = check_rows(table, sec["columns"], sec["rows"])
            if problem:
                svc.appdb.alert("bad_rows", f"batch {seq}: {problem}", box_id, now)
                return _err(400, "bad_rows", problem)
        conn = svc.appdb.connect()
        with svc.appdb.box_lock(box_id):
            cur = conn.execute("SELECT last_seq, last_hash FROM boxes WHERE box_id = ?", (box_id,)).fetchone()
            last_seq, last_hash = cur
            old = conn.execute("SELECT hash, received_ms, rows FROM batches WHERE box_id = ? AND seq = ?",
                               (box_id, seq)).fetchone()
            if old is not None:
                if old[0] == h:
                    return jsonify(_ack(svc, box_id, seq, h, "duplicate", last_seq, old[1], old[2]))
                svc.appdb.alert("conflicting_batch", f"batch {seq} resent with hash {h}, stored with {old[0]} "
                                "(replayed or altered old batch)", box_id, now)
                return _err(409, "conflict", f"batch {seq} is already stored with another hash; refused",
                            expected_seq=last_seq + 1, last_hash=last_hash)
            if seq != last_seq + 1:
                return _err(409, "out_of_order", f"expected batch {last_seq + 1}, got {seq}",
                            expected_seq=last_seq + 1, last_hash=last_hash)
            if payload["prev_hash"] != last_hash:
                svc.appdb.alert("chain_broken", f"batch {seq}: prev_hash {payload['prev_hash']} but batch {last_seq} "
                                f"has hash {last_hash}", box_id, now)
                return _err(409, "chain_broken", f"batch {seq} does not follow batch {last_seq} (prev_hash differs)",
                            expected_seq=last_seq + 1, last_hash=last_hash)
            try:
                res = svc.store.ingest(box_id, seq, h, payload, now)
            except StoreError as exc:
                svc.appdb.alert("store_error", str(exc), box_id, now)
                return _err(503, "store_unavailable", "the store could not take the batch; retry later")
            rows = sbatch.row_count(payload)
            # A time column may be null (e.g. an unknown end): it dates nothing.
            times = [v for sec in payload["tables"].values() for c in ("at_ms", "end_ms") if c in sec["columns"]
                     for r in sec["rows"] if (v := r[sec["columns"].index(c)]) is not None]
            ranges = {t: [s["from"], s["to"], len(s["rows"])] for t, s in payload["tables"].items()}
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO batches (box_id, seq, hash, prev_hash, box_created_ms, received_ms, rows, bytes, "
                             "ranges, min_ms, max_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (box_id, seq, h, payload["prev_hash"], payload["created_ms"], now, rows, len(body),
                              json.dumps(ranges), min(times) if times else None, max(times) if times else None))
                conn.execute("UPDATE boxes SET last_seq = ?, last_hash = ?, last_batch_ms = ?, "
                             "rows_received = rows_received + ? WHERE box_id = ?", (seq, h, now, rows, box_id))
                conn.execute("COMMIT")
            except BaseException:
                # Whatever failed, this thread's connection must not stay inside the transaction:
                # every later upload on it would fail with "transaction within a transaction".
                conn.execute("ROLLBACK")
                raise
        return jsonify(_ack(svc, box_id, seq, h, "stored", seq, now, rows))

    @bp.post("/boxes/<box_id>/heartbeat")
    def heartbeat(box_id: str):
        svc = ctx().services
        box, error = auth(box_id)
        if error:
            return error
        now = now_ms()
        try:
            doc = json.loads(request.get_data(cache=True))
        except ValueError:
            return _err(400, "bad_request", "body must be JSON")
        errors = sorted(validators["Heartbeat"].iter_errors(doc), key=str)
        if errors:
            return _err(400, "bad_request", f"heartbeat: {errors[0].message}")
        svc.appdb.connect().execute(
            # A box that does not know its address (no flow yet) sends null: keep the last it reported.
            # The address the request came from is kept apart (seen_address, set in auth()).
            "UPDATE boxes SET version = ?, health = ?, lag = ?, public_address = COALESCE(?, public_address), "
            "box_time_ms = ?, clock_offset_ms = ?, "
            "office = CASE WHEN ? != '' THEN ? ELSE office END WHERE box_id = ?",
            (doc["version"], json.dumps(doc["health"]), json.dumps(doc["lag"]), doc.get("public_address"),
             doc["box_time_ms"], doc["box_time_ms"] - now, doc.get("office", ""), doc.get("office", ""), box_id))
        fresh = svc.appdb.box(box_id)
        return jsonify({"server_time_ms": now, "next_seq": fresh["last_seq"] + 1, "last_hash": fresh["last_hash"],
                        "config_version": svc.appdb.push_config()["config_version"],
                        "seen_address": request.remote_addr or ""})

    @bp.get("/boxes/<box_id>/config")
    def push_config(box_id: str):
        svc = ctx().services
        box, error = auth(box_id)
        if error:
            return error
        return jsonify(svc.appdb.push_config())

    return bp


def _ack(svc, box_id: str, seq: int, h: str, status: str, last_seq: int, received_ms: int, rows: int) -> dict:
    return {"status": status, "seq": seq, "hash": h, "receipt": signing.sign_receipt(svc.key, box_id, seq, h),
            "next_seq": last_seq + 1, "received_ms": received_ms, "rows": rows}


def _enrol_tx(conn: sqlite3.Connection, code, doc: dict, pub, now: int) -> tuple[int, dict]:
    box_id, key_b64 = doc["box_id"], doc["public_key"]
    if code is None:
        return 403, {"error": "bad_code", "message": "unknown enrolment code. Fix: ask a central admin for a new one "
                     "(`central enrol-code`)"}
    code_id, code_box, expires, used_ms, used_by, used_key = code
    if used_ms is not None:
        if used_by == box_id and used_key == key_b64:
            return 200, {}
        return 403, {"error": "bad_code", "message": "this enrolment code was already used"}
    if now > expires:
        return 403, {"error": "bad_code", "message": "this enrolment code has expired. Fix: ask for a new one"}
    if code_box is not None and code_box != box_id:
        return 403, {"error": "bad_code", "message": f"this code is for box {code_box!r}, not {box_id!r}"}
    existing = conn.execute("SELECT public_key FROM boxes WHERE box_id = ?", (box_id,)).fetchone()
    if existing is not None and code_box != box_id:
        return 403, {"error": "bad_code", "message": f"box {box_id!r} is already enrolled; replacing its key needs "
                     "a code made for that box (`central enrol-code --box BOX`)"}
    if existing is None:
        conn.execute("INSERT INTO boxes (box_id, office, public_key, key_id, enrolled_ms, enrol_code_id, version) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (box_id, doc.get("office", ""), key_b64,
                                                     signing.key_fingerprint(pub), now, code_id, doc.get("version")))
    else:  # key rotation, authorised by a code bound to this box; the chain continues
        conn.execute("UPDATE boxes SET public_key = ?, key_id = ?, enrol_code_id = ?, revoked_ms = NULL WHERE box_id = ?",
                     (key_b64, signing.key_fingerprint(pub), code_id, box_id))
    conn.execute("UPDATE enrol_codes SET used_ms = ?, used_by_box = ?, used_key = ? WHERE id = ?",
                 (now, box_id, key_b64, code_id))
    return 201, {}
