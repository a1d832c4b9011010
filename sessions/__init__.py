"""The session lifecycle: who is online and why a session ended.

Front doors (the portal, the lease hook, RADIUS, the CLI) each build one SessionManager with
`build_sessions(config, ledger)` and call admit / end / readmit; the gate process runs the
Sweeper that closes what the kernel ended and reconciles after a crash.
"""
from __future__ import annotations

from functools import partial

from sessions.manager import BLOCKING_REASONS, REASONS, SessionManager, SessionPolicy

__all__ = ["BLOCKING_REASONS", "REASONS", "SessionManager", "SessionPolicy", "build_sessions"]


def build_sessions(config, ledger, gate=None) -> SessionManager:
    """The production SessionManager for `config` (a base.config.Config): the gate over its
    socket unless one is given, and RADIUS Disconnect when radius.das_secret is set."""
    if gate is None:
        from netcfg.gateclient import GateClient
        gate = GateClient(config.gate.socket, timeout=config.gate.timeout_seconds)
    disconnect = None
    if config.radius.das_secret:
        from radius.das import disconnect as das_disconnect
        disconnect = partial(das_disconnect, config.radius, timeout=config.radius.das_timeout_seconds)
    return SessionManager(ledger, gate, SessionPolicy.from_config(config.portal), config.sessions_lock_path,
                          disconnect=disconnect)
