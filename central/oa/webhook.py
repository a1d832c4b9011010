"""The LINE webhook: POST /line/webhook.

The signature is checked over the untouched raw body with the Messaging API channel secret
(line-bot-sdk v3's SignatureValidator) before anything is parsed; a missing or wrong signature
answers 401, a body that is not LINE's JSON 400, and neither leaves any trace. Good events are
stored in the inbox (a webhookEventId seen before is dropped) and LINE gets its 200 at once; the
worker does the work afterwards.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from linebot.v3 import SignatureValidator

MAX_BODY = 1 << 20  # LINE's webhook bodies are small; refuse anything absurd before hashing


def create_blueprint() -> Blueprint:
    bp = Blueprint("oa_webhook", __name__)

    @bp.post("/line/webhook")
    def webhook() -> Any:
        ext = current_app.extensions["skillspot_oa"]
        signature = request.headers.get("X-Line-Signature", "")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return jsonify({"message": "body too large"}), 413
        body = request.get_data(cache=False)  # raw bytes, exactly as LINE signed them
        if not signature or not SignatureValidator(ext.channel_secret).validate(body.decode("utf-8", "replace"), signature):
            return jsonify({"message": "invalid signature"}), 401
        try:
            doc = json.loads(body)
            events = doc["events"]
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return jsonify({"message": "not a LINE webhook body"}), 400
        new, dup = ext.oa.accept(events)
        return jsonify({"accepted": new, "duplicates": dup})

    return bp
