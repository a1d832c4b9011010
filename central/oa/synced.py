"""What the OA reads from the traffic store (rows the boxes synced): the portal's separate,
unticked consent to OA messages (ledger `events` rows of kind `oa_consent`, which sync carries
into the store's `box_rows`), WiFi visitors per office per day, and friends the WiFi brought
(logins whose LINE login added the OA as a friend: `friendship_changed` = 1).

The store owns its SQL (`Store.oa_consent_events`, `visitors_per_box_day`,
`friends_brought_per_box_month`); this module turns boxes into offices and keeps the high-water mark.
"""
from __future__ import annotations

import json
from typing import Any

from central.oa.service import Oa, _one


def import_portal_consents(oa: Oa, store: Any) -> int:
    """Record consents given in the portal's optional box since the last run (high-water mark on
    the store's receive time, kept in oa_kv). Only grants are taken: an unticked box at a later
    login is the default, not a withdrawal (withdrawal is one tap in the chat). Returns grants."""
    conn = oa.connect()
    row = _one(conn, "SELECT v FROM oa_kv WHERE k = 'portal_consent_hw'")
    hw = int(row["v"]) if row else 0
    rows = store.oa_consent_events(hw)
    n = 0
    for r in rows:
        data = json.loads(r["data"])
        try:
            detail = json.loads(data.get("detail") or "{}")
        except ValueError:
            continue
        user = data.get("subject") or ""
        if detail.get("given") is True and user.startswith("U") and not oa.consents(user, "messages"):
            oa.set_consent(user, "messages", True, "portal")
            n += 1
        hw = max(hw, int(r["received_ms"]))
    conn.execute("INSERT OR REPLACE INTO oa_kv VALUES ('portal_consent_hw', ?)", (str(hw),))
    return n


def wifi_visitors(store: Any, start_ms: int, end_ms: int) -> list[dict]:
    """Distinct visitors (LINE user, else device) per office per Bangkok day."""
    rows = store.visitors_per_box_day(start_ms, end_ms)
    out: dict[tuple, int] = {}
    for r in rows:
        office = store.office_of(r["box_id"]) or r["box_id"]
        out[(office, r["day"])] = out.get((office, r["day"]), 0) + int(r["visitors"])
    return [{"office": k[0], "day": k[1], "visitors": v} for k, v in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def friends_brought(store: Any, start_ms: int, end_ms: int) -> list[dict]:
    """LINE users who added the OA as a friend while logging into the WiFi, per office per month."""
    rows = store.friends_brought_per_box_month(start_ms, end_ms)
    out: dict[tuple, int] = {}
    for r in rows:
        office = store.office_of(r["box_id"]) or r["box_id"]
        out[(office, r["month"])] = out.get((office, r["month"]), 0) + int(r["friends"])
    return [{"office": k[0], "month": k[1], "friends": v} for k, v in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
