"""Applying the ruleset and changing the authorised set through libnftables (in-process,
one netlink transaction per change: no `nft` process per login)."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import nftables

from netcfg.ruleset import ACTIVE_SET, AUTHORISED_MAC6_SET, AUTHORISED_SET, DOWN_METER, FAMILY, TABLE, UP_METER


class NftError(Exception):
    """nft refused a ruleset or a change; the message carries nft's own words."""


@dataclass(frozen=True)
class Authorisation:
    """One element of the authorised set as the kernel holds it now."""

    mac: str
    ip: str
    timeout: int
    expires: int  # seconds left


def check_ruleset(text: str) -> None:
    """`nft -c -f`: parse and check `text` against the kernel without applying it."""
    _run_nft_file(text, check=True)


def apply_ruleset(text: str, keep_elements: bool = True) -> int:
    """Check, then apply `text` atomically (it replaces the whole skillspot table).

    With keep_elements, every timed set element already in the kernel (live sessions,
    walled-garden addresses) is carried over with the time it has left, in the same
    transaction: reloading the firewall never logs anybody out. Returns how many were kept.
    """
    kept = surviving_elements() if keep_elements else []
    full = text + "".join(kept)
    _run_nft_file(full, check=True)
    _run_nft_file(full, check=False)
    return len(kept)


def surviving_elements() -> list[str]:
    """`add element` lines re-creating the current table's timed elements with their remaining time."""
    proc = subprocess.run(["nft", "-j", "list", "table", FAMILY, TABLE], capture_output=True, text=True)
    if proc.returncode != 0:
        return []  # no table yet: nothing to keep
    lines = []
    for item in json.loads(proc.stdout).get("nftables", []):
        s = item.get("set")
        if not s or s["name"] in (UP_METER, DOWN_METER):
            continue  # rate-limit state is rebuilt by traffic, not carried over
        for entry in s.get("elem", []):
            elem = entry.get("elem") if isinstance(entry, dict) else None
            if not elem or int(elem.get("expires", 0)) <= 0:
                continue
            val = elem["val"]
            key = " . ".join(val["concat"]) if isinstance(val, dict) else str(val)
            lines.append(f"add element {FAMILY} {TABLE} {s['name']} {{ {key} timeout {int(elem['expires'])}s }}\n")
    return lines


def _run_nft_file(text: str, check: bool) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(text)
        path = fh.name
    try:
        args = ["nft", "-c", "-f", path] if check else ["nft", "-f", path]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NftError(f"{'checking' if check else 'applying'} the ruleset failed: {proc.stderr.strip()}")
    finally:
        os.unlink(path)


class NftSets:
    """The authorised sets, changed through libnftables' JSON API.

    One instance per process; libnftables handles are not thread-safe, hence the lock.
    """

    def __init__(self) -> None:
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)
        self._lock = threading.Lock()

    def _cmd(self, commands: list[dict]) -> dict:
        with self._lock:
            rc, out, err = self._nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise NftError(f"nft refused {json.dumps(commands)[:300]}: {err.strip()}")
        return out or {}

    def _elements(self, set_name: str) -> list:
        out = self._cmd([{"list": {"set": {"family": FAMILY, "table": TABLE, "name": set_name}}}])
        for item in out.get("nftables", []):
            if "set" in item:
                return item["set"].get("elem", [])
        return []

    def _active(self) -> set[tuple[str, str]]:
        keys = set()
        for item in self._elements(ACTIVE_SET):
            elem = item.get("elem", item) if isinstance(item, dict) else item
            val = elem["val"] if isinstance(elem, dict) and "val" in elem else elem
            keys.add(tuple(val["concat"]))
        return keys

    def list(self) -> list[Authorisation]:
        """Every device the kernel lets through now, with the seconds it has left. A device
        whose idle element ran out is not listed: the kernel no longer lets it through."""
        result = []
        active = self._active()
        for item in self._elements(AUTHORISED_SET):
            elem = item.get("elem", item)
            mac, ip = elem["val"]["concat"]
            if (mac, ip) not in active:
                continue
            result.append(Authorisation(mac=mac, ip=ip, timeout=int(elem.get("timeout", 0)),
                                        expires=int(elem.get("expires", 0))))
        return result

    def authorise(self, mac: str, ip: str, seconds: int) -> None:
        """Let (mac, ip) through for `seconds`, replacing any earlier element of that MAC
        (its address may have changed), in one transaction."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        commands = self._removals(mac)
        commands.append({"add": {"element": {"family": FAMILY, "table": TABLE, "name": AUTHORISED_SET,
                                             "elem": [{"elem": {"val": {"concat": [mac, ip]}, "timeout": seconds}}]}}})
        commands.append({"add": {"element": {"family": FAMILY, "table": TABLE, "name": AUTHORISED_MAC6_SET,
                                             "elem": [{"elem": {"val": mac, "timeout": seconds}}]}}})
        # The idle element takes the set's own timeout (portal.idle_seconds); traffic renews it.
        commands.append({"add": {"element": {"family": FAMILY, "table": TABLE, "name": ACTIVE_SET,
                                             "elem": [{"concat": [mac, ip]}]}}})
        self._cmd(commands)

    def revoke(self, mac: str) -> list[str]:
        """Remove every element of `mac`; returns the IPv4 addresses it had (empty if none)."""
        found = [a for a in self.list() if a.mac == mac]
        commands = self._removals(mac)
        if commands:
            self._cmd(commands)
        return [a.ip for a in found]

    def _removals(self, mac: str) -> list[dict]:
        """Delete commands for every element of `mac` in every set, idle ones included."""
        commands = []
        for item in self._elements(AUTHORISED_SET):
            m, ip = item.get("elem", item)["val"]["concat"]
            if m == mac:
                commands.append(self._delete(AUTHORISED_SET, m, ip))
        for m, ip in self._active():
            if m == mac:
                commands.append(self._delete(ACTIVE_SET, m, ip))
        if self._has_mac6(mac):
            commands.append(self._delete_mac6(mac))
        return commands

    def _has_mac6(self, mac: str) -> bool:
        return any(item.get("elem", item)["val"] == mac for item in self._elements(AUTHORISED_MAC6_SET))

    @staticmethod
    def _delete(set_name: str, mac: str, ip: str) -> dict:
        return {"delete": {"element": {"family": FAMILY, "table": TABLE, "name": set_name,
                                       "elem": [{"concat": [mac, ip]}]}}}

    @staticmethod
    def _delete_mac6(mac: str) -> dict:
        return {"delete": {"element": {"family": FAMILY, "table": TABLE, "name": AUTHORISED_MAC6_SET,
                                       "elem": [mac]}}}
