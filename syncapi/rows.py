"""Row schemas: the columns of every table a box sends, with their JSON types.

A batch carries, per box table, a list of column names and rows as lists in that order
(row-major, so the centre can turn them into ClickHouse rows without a per-field lookup).
Times are integer Unix milliseconds (UTC); IPv4 addresses in flows are unsigned integers;
bytes are hex text. Short flows live on the box in compressed segments: a batch sends them
decoded, one row each, keyed by (segment id, index in segment).

Tables not listed here (a later box migration) are still sent; the centre keeps them as
generic rows (JSON text) until it learns their schema, so nothing is lost.
"""
from __future__ import annotations

# JSON type per column: "int", "str", "int?" / "str?" (nullable).
FLOW_FIELDS: tuple[tuple[str, str], ...] = (
    ("start_ms", "int"), ("end_ms", "int"), ("proto", "int"), ("src_ip", "int"), ("src_port", "int"),
    ("pub_ip", "int"), ("pub_port", "int"), ("dst_ip", "int"), ("dst_port", "int"),
    ("bytes_orig", "int"), ("bytes_reply", "int"), ("flags", "int"))

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "leases": (("id", "int"), ("at_ms", "int"), ("box_id", "str"), ("event", "str"), ("mac", "str"), ("ip", "str"),
               ("hostname", "str?"), ("expires_ms", "int?")),
    "logins": (("id", "int"), ("at_ms", "int"), ("box_id", "str"), ("method", "str"), ("line_user_id", "str"),
               ("display_name", "str"), ("friend", "int?"), ("friendship_changed", "int?"),
               ("consent_version", "str?"), ("mac", "str"), ("ip", "str"), ("expires_ms", "int")),
    "logouts": (("id", "int"), ("at_ms", "int"), ("login_id", "int?"), ("mac", "str"), ("reason", "str")),
    "radius_acct": (("id", "int"), ("at_ms", "int"), ("box_id", "str"), ("nas_address", "str"),
                    ("nas_identifier", "str?"), ("status_type", "int"), ("acct_session_id", "str?"), ("mac", "str?"),
                    ("user_name", "str?"), ("called_station_id", "str?"), ("framed_ip", "str?"),
                    ("input_octets", "int?"), ("output_octets", "int?"), ("input_packets", "int?"),
                    ("output_packets", "int?"), ("session_time", "int?"), ("terminate_cause", "int?"),
                    ("event_ms", "int?"), ("delay_time", "int?"), ("dedupe_key", "str")),
    "clock_samples": (("id", "int"), ("at_ms", "int"), ("synced", "int"), ("offset_us", "int?"), ("stratum", "int?"),
                      ("source", "str?"), ("leap", "str?"), ("error", "str?")),
    # Short flows: decoded from the box's segments; (id, idx) = (segment id, index in segment).
    "flow_segments": (("id", "int"), ("idx", "int"), *FLOW_FIELDS),
    "flows_long": (("id", "int"), ("at_ms", "int"), *FLOW_FIELDS),
}

# Box tables that are never sent: bookkeeping of the box itself. centre_acks would loop
# (an acknowledgement is a new row, which would need a new batch and a new acknowledgement).
# flow_staging is the one table whose rows are deleted before retention: compaction consumes
# them into flow_segments/flows_long, which are sent. Sending staging too would store every
# flow twice (once open, without an end) and a batch retried after a compaction could not be
# rebuilt byte-identically.
NOT_SENT = frozenset({"centre_acks", "sync_batches", "sync_acks", "flow_staging"})

JSON_TYPES = {"int": ["integer"], "int?": ["integer", "null"], "str": ["string"], "str?": ["string", "null"]}


def known_columns(table: str) -> list[str] | None:
    """The column names the centre expects for `table`, or None for a table without a schema."""
    cols = TABLES.get(table)
    return None if cols is None else [c for c, _ in cols]


def row_json_schema(table: str) -> dict:
    """A JSON Schema for one row (a list) of a known table, e.g. for tests and validation."""
    cols = TABLES[table]
    return {"type": "array", "minItems": len(cols), "maxItems": len(cols),
            "prefixItems": [{"type": JSON_TYPES[t]} for _, t in cols]}


def check_rows(table: str, columns: list[str], rows: list[list]) -> str | None:
    """Validate a table section quickly; returns a message naming the first problem, or None."""
    spec = TABLES.get(table)
    if spec is None:
        if not columns or "id" not in columns:
            return f"table {table}: a table without a known schema needs an 'id' column"
        for i, r in enumerate(rows):
            if not isinstance(r, list) or len(r) != len(columns):
                return f"table {table} row {i}: expected {len(columns)} values"
        return None
    want = [c for c, _ in spec]
    if columns != want:
        return (f"table {table}: columns {columns} differ from the centre's {want}. "
                "Fix: upgrade the centre (or the box) so both speak the same syncapi version")
    n = len(want)
    if not all(type(r) is list and len(r) == n for r in rows):
        i = next(i for i, r in enumerate(rows) if type(r) is not list or len(r) != n)
        return f"table {table} row {i}: expected {n} values"
    # Column by column with set(map(type, ...)): a 50,000-row batch is checked in C, not per value.
    for j, (c, t) in enumerate(spec):
        kinds = set(map(type, [r[j] for r in rows]))
        if kinds <= _ALLOWED[t]:
            continue
        for i, r in enumerate(rows):
            v = r[j]
            if type(v) in _ALLOWED[t]:
                continue
            if v is None:
                return f"table {table} row {i}: {c} is null"
            if t[0] == "i":
                return f"table {table} row {i}: {c} must be an integer, not {v!r}"
            return f"table {table} row {i}: {c} must be text, not {v!r}"
    return None


_ALLOWED = {"int": {int}, "int?": {int, type(None)}, "str": {str}, "str?": {str, type(None)}}
