"""The box's link to the centre: `skillspot sync` (service) and `skillspot sync status`.

HTTP and scheduling live here; every SQL statement on the ledger is in ledger/sync.py.
"""
from __future__ import annotations


def status(ledger) -> dict:
    """Sync progress of this box (for the admin page, `sync status` and the heartbeat):
    formed_seq, last_acked_seq, last_ack_ms, pending_batches, pending_rows, unsent_rows,
    unsent_tables, oldest_unsent_ms, lag_ms, acknowledged_seal, sent_marks, acked_marks."""
    from ledger.sync import status as _status
    return _status(ledger)
