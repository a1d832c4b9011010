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

    python -I -S /path/to/provisioning/leasehook.py CONFIG [--socket PATH] EVENT MAC IP [HOSTNAME]
"""
from __future__ import annotations

import os
import socket
import sys

from _json import encode_basestring_ascii as _quote  # C: JSON strings without importing json (and re)

TIMEOUT_SECONDS = 20.0  # the gate answers in milliseconds; a wedged one must not hang dnsmasq forever
DEFAULT_SOCKET = "/run/skillspot/gate.sock"
# The project's root (a checkout or site-packages): the long way runs `skillspot.cli` from it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HookError(Exception):
    """The gate could not take the event; the message says why (the full path runs instead)."""


def gate_socket(config_path: str) -> str:
    """[gate] socket from the TOML file (unvalidated: the full path validates if it is needed).
    The rendered hook passes the socket itself, so an event does not pay for tomllib."""
    import tomllib
    with open(config_path, "rb") as fh:
        data = tomllib.load(fh)
    return str(data.get("gate", {}).get("socket", DEFAULT_SOCKET))


def encode(args: list[str], env: dict[str, str]) -> bytes:
    """The request line, {"op":"lease","args":[...],"env":{...}}, built from JSON-quoted strings.
    Importing json (and with it re) was half of the hook's CPU; the strings are all it needs."""
    env_items = ",".join(f"{_quote(k)}:{_quote(v)}" for k, v in env.items())
    return (f'{{"op":"lease","args":[{",".join(_quote(a) for a in args)}],"env":{{{env_items}}}}}'
            .encode() + b"\n")


def send(path: str, args: list[str], env: dict[str, str]) -> dict:
    """One lease request to the gate; its result, or HookError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_SECONDS)
            sock.connect(path)
            sock.sendall(encode(args, env))
            answer = sock.makefile("rb").readline()
    except OSError as exc:
        raise HookError(f"the gate on {path} did not answer: {exc}") from None
    # The gate writes compact JSON (netcfg/gated.py): an accepted event needs no parser. Anything
    # else is decoded properly, to say what went wrong.
    if answer.startswith(b'{"ok":true,"result":{"recorded":true,'):
        return {"recorded": True, "readmitted": b'"readmitted":true' in answer}
    import json
    try:
        decoded = json.loads(answer)
    except ValueError:
        raise HookError(f"the gate on {path} answered {answer[:200]!r}") from None
    if not decoded.get("ok"):
        raise HookError(f"the gate refused the lease event: {decoded.get('error')}")
    return decoded.get("result") or {}


def main(argv: list[str]) -> int:
    """CONFIG [--socket PATH] EVENT MAC IP [HOSTNAME]: hand one event to the gate, or record it
    the long way when the gate cannot take it."""
    if len(argv) < 2:
        print("usage: leasehook.py CONFIG [--socket PATH] EVENT MAC IP [HOSTNAME]", file=sys.stderr)
        return 2
    config_path, args = argv[0], argv[1:]
    sock_path = None
    if args[:1] == ["--socket"] and len(args) >= 2:
        sock_path, args = args[1], args[2:]
    env = {k: v for k, v in os.environ.items() if k.startswith("DNSMASQ_")}
    try:
        result = send(sock_path or gate_socket(config_path), args, env)
    except (HookError, OSError, ValueError) as exc:
        print(f"lease hook: {exc}; recording it the long way", file=sys.stderr)
        # The hook runs isolated (-I -S), so the long way gets the project root on its path.
        os.execve(sys.executable, [sys.executable, "-m", "skillspot.cli", "--config", config_path,
                                   "lease-event", *args], {**os.environ, "PYTHONPATH": ROOT})
    if result.get("readmitted"):
        mac, ip = (args + ["", "", ""])[1:3]
        print(f"returning device {mac.lower()} at {ip} let in again", file=sys.stderr)
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
