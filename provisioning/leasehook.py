"""The dnsmasq lease hook: a small client that hands each lease event to the gate.

dnsmasq runs its dhcp-script once per lease event, and waits for it. Starting the whole
`skillspot` command for that (click, the config model, sqlite-utils, the session layer) cost
0.8-1.3 s of CPU and up to 108 MB per event. This module imports only the standard library:
it reads [gate] socket from the config file, sends {"op": "lease", "args", "env"} to the gate,
which already has the ledger and the session layer loaded, records the lease and lets a
returning device in again, and answers when both are done.

If the gate does not answer (not started yet at boot, restarting, stopped), the hook runs the
full `skillspot lease-event` instead, which records the event itself (or spools it): an event
is never lost because the fast path is down.

    python -m provisioning.leasehook CONFIG EVENT MAC IP [HOSTNAME]
"""
from __future__ import annotations

import json
import os
import socket
import sys

TIMEOUT_SECONDS = 20.0  # the gate answers in milliseconds; a wedged one must not hang dnsmasq forever
DEFAULT_SOCKET = "/run/skillspot/gate.sock"


class HookError(Exception):
    """The gate could not take the event; the message says why (the full path runs instead)."""


def gate_socket(config_path: str) -> str:
    """[gate] socket from the TOML file (unvalidated: the full path validates if it is needed)."""
    import tomllib
    with open(config_path, "rb") as fh:
        data = tomllib.load(fh)
    return str(data.get("gate", {}).get("socket", DEFAULT_SOCKET))


def send(path: str, args: list[str], env: dict[str, str]) -> dict:
    """One lease request to the gate; its result, or HookError."""
    request = json.dumps({"op": "lease", "args": args, "env": env}, separators=(",", ":")).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_SECONDS)
            sock.connect(path)
            sock.sendall(request)
            answer = sock.makefile("rb").readline()
    except OSError as exc:
        raise HookError(f"the gate on {path} did not answer: {exc}") from None
    try:
        decoded = json.loads(answer)
    except ValueError:
        raise HookError(f"the gate on {path} answered {answer[:200]!r}") from None
    if not decoded.get("ok"):
        raise HookError(f"the gate refused the lease event: {decoded.get('error')}")
    return decoded.get("result") or {}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m provisioning.leasehook CONFIG EVENT MAC IP [HOSTNAME]", file=sys.stderr)
        return 2
    config_path, args = argv[0], argv[1:]
    env = {k: v for k, v in os.environ.items() if k.startswith("DNSMASQ_")}
    try:
        result = send(gate_socket(config_path), args, env)
    except (HookError, OSError, ValueError) as exc:
        print(f"lease hook: {exc}; recording it the long way", file=sys.stderr)
        os.execv(sys.executable, [sys.executable, "-m", "skillspot.cli", "--config", config_path,
                                  "lease-event", *args])
    if result.get("readmitted"):
        print(f"returning device {result['mac']} at {result['ip']} let in again", file=sys.stderr)
    return 0


# -- the gate's side ----------------------------------------------------------------------

def serve_lease(config, gate, request: dict) -> dict:
    """Record one lease event from the hook and let a returning device in again; runs in the
    gate process (`gate` is its own GateService: no socket round trip). A ledger failure
    raises, so the hook falls back to the full path, which spools the event."""
    import time

    from ledger.db import open_ledger
    from ledger.records import log_event, record_lease
    from provisioning.leases import lease_event_from_dnsmasq
    from sessions import build_sessions

    args, env = request.get("args"), request.get("env") or {}
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args) or not isinstance(env, dict):
        raise ValueError("a lease request carries args (strings) and env (an object)")
    event = lease_event_from_dnsmasq(args, {str(k): str(v) for k, v in env.items()}, int(time.time() * 1000))
    # A ledger handle per event: SQLite handles stay in the thread that made them, and the
    # gate answers each connection in a thread of its own.
    ledger = open_ledger(config.ledger_path, config.box.id)
    try:
        record_lease(ledger, event)
        readmitted = False
        if event.event in ("add", "old"):
            try:
                readmitted = build_sessions(config, ledger, gate=gate).readmit(event.mac, event.ip)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal for the lease record
                try:
                    log_event(ledger, "returning_failed", event.mac, ip=event.ip,
                              error=f"{type(exc).__name__}: {exc}"[:300])
                except Exception:  # noqa: BLE001
                    pass
        return {"recorded": True, "readmitted": readmitted, "mac": event.mac, "ip": event.ip}
    finally:
        ledger.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
