"""syncapi: signing, batch format, row schemas, and real requests/responses of the centre's
box API validated against syncapi/openapi.yaml (openapi-core)."""
from __future__ import annotations

import gzip
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncapi import OPENAPI_PATH, signing
from syncapi import batch as sbatch
from syncapi.rows import TABLES, check_rows, row_json_schema

NOW = 1_790_000_000_000


def test_signature_binds_method_path_box_time_nonce_and_body():
    key = Ed25519PrivateKey.generate()
    h = signing.sign_request(key, "POST", "/api/v1/x", "box-a", b"body", NOW, "ab" * 16)
    req = signing.parse_headers(h)
    signing.verify_request(key.public_key(), req, "POST", "/api/v1/x", b"body", NOW + 1000)
    for method, path, body in (("GET", "/api/v1/x", b"body"), ("POST", "/api/v1/y", b"body"), ("POST", "/api/v1/x", b"bodz")):
        with pytest.raises(signing.AuthError) as ei:
            signing.verify_request(key.public_key(), req, method, path, body, NOW)
        assert ei.value.code == "bad_signature"
    other = signing.parse_headers({**h, signing.H_BOX: "box-b"})
    with pytest.raises(signing.AuthError, match="signature"):
        signing.verify_request(key.public_key(), other, "POST", "/api/v1/x", b"body", NOW)
    with pytest.raises(signing.AuthError) as ei:
        signing.verify_request(key.public_key(), req, "POST", "/api/v1/x", b"body", NOW + signing.REPLAY_WINDOW_MS + 1)
    assert ei.value.code == "clock_skew"
    with pytest.raises(signing.AuthError) as ei:
        signing.verify_request(Ed25519PrivateKey.generate().public_key(), req, "POST", "/api/v1/x", b"body", NOW)
    assert ei.value.code == "bad_signature"


@pytest.mark.parametrize("drop,code", [(signing.H_SIG, "unsigned"), (signing.H_TIME, "unsigned")])
def test_missing_or_bad_headers(drop, code):
    h = signing.sign_request(Ed25519PrivateKey.generate(), "GET", "/p", "box-a", b"", NOW)
    with pytest.raises(signing.AuthError) as ei:
        signing.parse_headers({k: v for k, v in h.items() if k != drop})
    assert ei.value.code == code
    with pytest.raises(signing.AuthError) as ei:
        signing.parse_headers({**h, signing.H_NONCE: "XYZ"})
    assert ei.value.code == "bad_nonce"


def test_receipt_verifies_only_for_its_batch():
    key = Ed25519PrivateKey.generate()
    r = signing.sign_receipt(key, "box-a", 3, "a" * 64)
    assert signing.verify_receipt(key.public_key(), r, "box-a", 3, "a" * 64)
    assert not signing.verify_receipt(key.public_key(), r, "box-a", 4, "a" * 64)
    assert not signing.verify_receipt(key.public_key(), r, "box-b", 3, "a" * 64)
    assert not signing.verify_receipt(key.public_key(), "not base64!", "box-a", 3, "a" * 64)


def _tables():
    return {"logouts": {"from": 0, "to": 2, "columns": ["id", "at_ms", "login_id", "mac", "reason"],
                        "rows": [[1, NOW, 1, "02:00:00:00:00:01", "expired"], [2, NOW, None, "02:00:00:00:00:02", "revoked"]]}}


def test_batch_is_deterministic_and_hash_covers_seq_and_chain():
    raw1, h1, w1 = sbatch.build("box-a", 1, sbatch.GENESIS, NOW, _tables())
    raw2, h2, w2 = sbatch.build("box-a", 1, sbatch.GENESIS, NOW, _tables())
    assert (raw1, h1, w1) == (raw2, h2, w2)  # a retry sends the very same bytes
    assert sbatch.build("box-a", 2, sbatch.GENESIS, NOW, _tables())[1] != h1
    assert sbatch.build("box-a", 1, h1, NOW, _tables())[1] != h1
    payload, h = sbatch.parse(w1)
    assert h == h1 and sbatch.row_count(payload) == 2


def test_batch_bad_bodies_are_named():
    with pytest.raises(sbatch.BatchError, match="not gzip"):
        sbatch.parse(b"plain text")
    with pytest.raises(sbatch.BatchError, match="truncated"):
        sbatch.parse(sbatch.build("box-a", 1, sbatch.GENESIS, NOW, _tables())[2][:-10])
    with pytest.raises(sbatch.BatchError) as ei:
        sbatch.decompress(gzip.compress(b"\0" * (2 << 20)), limit=1 << 20)   # a zip bomb stops at the limit
    assert ei.value.code == "too_large"
    with pytest.raises(sbatch.BatchError, match="format"):
        sbatch.parse(gzip.compress(json.dumps({"format": "other"}).encode()))


def test_row_checks_name_table_row_and_column():
    cols = [c for c, _ in TABLES["logouts"]]
    assert check_rows("logouts", cols, [[1, NOW, None, "m", "r"]]) is None
    assert "mac is null" in check_rows("logouts", cols, [[1, NOW, None, None, "r"]])
    assert "at_ms must be an integer" in check_rows("logouts", cols, [[1, "soon", None, "m", "r"]])
    assert "upgrade" in check_rows("logouts", cols[:-1], [[1, NOW, None, "m"]])
    assert check_rows("some_new_table", ["id", "x"], [[1, "y"]]) is None
    import jsonschema
    jsonschema.validate([1, NOW, None, "m", "r"], row_json_schema("logouts"))


# ---- the centre's real answers against the OpenAPI document --------------------------------
SENT: dict[tuple[str, str], bytes] = {}

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    pytest.importorskip("chdb")
    from openapi_core import OpenAPI
    from central.app import build_services, create_app
    from central.config import parse
    cfg = parse({"data_dir": str(tmp_path_factory.mktemp("c")), "admin": {"secure_cookies": False}})
    svc = build_services(cfg)
    app = create_app(cfg, svc)
    yield app, svc, OpenAPI.from_file_path(str(OPENAPI_PATH))
    svc.store.close()


def _check(openapi, resp):
    """Validate the request that was sent (rebuilt from what the client sent) and the answer."""
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request
    sent = resp.request
    env = EnvironBuilder(method=sent.method, path=sent.path, data=SENT[sent.path, sent.method],
                         headers=dict(sent.headers)).get_environ()
    req = WerkzeugOpenAPIRequest(Request(env))
    openapi.validate_request(req)
    openapi.validate_response(req, WerkzeugOpenAPIResponse(resp))


def test_real_requests_and_responses_match_the_document(api):
    import yaml
    import jsonschema
    app, svc, openapi = api
    c = app.test_client()
    key = Ed25519PrivateKey.generate()
    box = "box-oas"

    def post(path, body, ctype, extra=None, k=key):
        h = signing.sign_request(k, "POST", path, box, body, svc.now_ms())
        SENT[path, "POST"] = body
        return c.post(path, data=body, headers={**h, "Content-Type": ctype, **(extra or {})})

    code = svc.appdb.new_enrol_code("tester", svc.now_ms(), 3600_000)
    body = json.dumps({"code": code, "box_id": box, "public_key": signing.public_b64(key.public_key()),
                       "office": "สำนักงาน", "version": "t"}).encode()
    r = post("/api/v1/enrol", body, "application/json")
    assert r.status_code == 201, r.json
    _check(openapi, r)
    r = post("/api/v1/enrol", json.dumps({"code": "x" * 8, "box_id": box, "public_key": signing.public_b64(key.public_key())}).encode(),
             "application/json")
    assert r.status_code == 403 and r.json["error"] == "bad_code"
    _check(openapi, r)

    raw, h, wire = sbatch.build(box, 1, sbatch.GENESIS, svc.now_ms(), _tables())
    doc = yaml.safe_load(OPENAPI_PATH.read_text())
    jsonschema.validate(json.loads(raw), {**doc["components"]["schemas"]["BatchPayload"], "components": doc["components"]})
    path = f"/api/v1/boxes/{box}/batches/1"
    r = post(path, wire, sbatch.CONTENT_TYPE, {sbatch.H_HASH: h})
    assert r.status_code == 200 and r.json["status"] == "stored"
    _check(openapi, r)
    assert signing.verify_receipt(svc.key.public_key(), r.json["receipt"], box, 1, h)
    _, h3, wire3 = sbatch.build(box, 3, h, svc.now_ms(), _tables())
    r = post(f"/api/v1/boxes/{box}/batches/3", wire3, sbatch.CONTENT_TYPE, {sbatch.H_HASH: h3})
    assert r.status_code == 409 and r.json["expected_seq"] == 2
    _check(openapi, r)

    hb = {"version": "t", "box_time_ms": svc.now_ms(), "health": {"gate": "ok"}, "public_address": None,
          "lag": {"unsent_rows": 0, "oldest_unsent_ms": None, "pending_batches": 0, "last_acked_seq": 1, "lag_ms": 0}}
    r = post(f"/api/v1/boxes/{box}/heartbeat", json.dumps(hb).encode(), "application/json")
    assert r.status_code == 200 and r.json["next_seq"] == 2
    _check(openapi, r)
    r = post(f"/api/v1/boxes/{box}/heartbeat", json.dumps({"version": "t"}).encode(), "application/json")
    assert r.status_code == 400 and "required" in r.json["message"]

    svc.appdb.set_push_config("2026-12", [{"kind": "mac", "value": "02:00:00:00:00:09", "reason": "stolen"}], svc.now_ms())
    gp = f"/api/v1/boxes/{box}/config"
    SENT[gp, "GET"] = b""
    r = c.get(gp, headers=signing.sign_request(key, "GET", gp, box, b"", svc.now_ms()))
    assert r.status_code == 200 and r.json["terms_version"] == "2026-12" and r.json["config_version"] == 1
    _check(openapi, r)
    r = c.get(gp, headers=signing.sign_request(key, "GET", gp, box, b"", svc.now_ms() - 3600_000))
    assert r.status_code == 401 and r.json["error"] == "clock_skew" and abs(r.json["server_time_ms"] - svc.now_ms()) < 60_000
    _check(openapi, r)
    r = c.get(gp, headers=signing.sign_request(Ed25519PrivateKey.generate(), "GET", gp, box, b"", svc.now_ms()))
    assert r.status_code == 401 and r.json["error"] == "bad_signature"
    _check(openapi, r)
