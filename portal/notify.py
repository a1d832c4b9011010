"""The welcome message from the DSD Official Account, pushed after login in a background thread.

The push (with line-bot-sdk's retries) can take seconds or hang; the visitor's access never
waits for it. A failure is written to the ledger's event log, never raised into a request.
"""
from __future__ import annotations

import logging
import threading

from ledger.db import Ledger
from ledger.records import log_event
from lineapi.client import LineError
from base.config import LineConfig

log = logging.getLogger(__name__)


def _push(cfg: LineConfig, ledger: Ledger, user_id: str, text: str) -> None:
    try:
        # line-bot-sdk (about 60 MB of modules) is loaded by the first push, in the background
        # thread, not by every portal process at start.
        from lineapi.messaging import push_text
        push_text(cfg, user_id, text)
    except LineError as exc:
        log.warning("welcome push failed: %s", exc)
        _record(ledger, "welcome_push_failed", user_id, kind=exc.kind, status=exc.status, error=str(exc))
        return
    except Exception as exc:  # a background thread has nobody to raise to
        log.exception("welcome push crashed")
        _record(ledger, "welcome_push_failed", user_id, kind="crash", error=f"{type(exc).__name__}: {exc}")
        return
    _record(ledger, "welcome_push_sent", user_id)


def _record(ledger: Ledger, kind: str, user_id: str, **detail) -> None:
    try:
        log_event(ledger, kind, user_id, **detail)
    except Exception:
        log.exception("could not record %s", kind)


def push_welcome_async(cfg: LineConfig, ledger: Ledger, user_id: str, text: str) -> threading.Thread:
    """Start pushing `text` to `user_id` and return at once; the thread is returned for tests."""
    thread = threading.Thread(target=_push, args=(cfg, ledger, user_id, text), name="welcome-push", daemon=True)
    thread.start()
    return thread
