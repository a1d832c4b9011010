"""Applying the ruleset and changing the authorised set through libnftables (in-process,
one netlink transaction per change: no `nft` process per login)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import nftables

from netcfg.fastpath import recent_removals
from netcfg.ruleset import ACTIVE_MAC6_SET, ACTIVE_SET, AUTHORISED_MAC6_SET, AUTHORISED_SET, DOWN_METER, FAMILY, TABLE, UP_METER
from netcfg.idlescan import Activity, read_activity
from netcfg.setdump import SetDumpError, mac_ipv4_of, mac_of, timed_elements


class NftError(Exception):
    """nft refused a ruleset or a change; the message carries nft's own words."""


def check_ruleset(text: str) -> None:
    """`nft -c -f`: parse and check `text` against the kernel without applying it."""
    _run_nft_file(text, check=True)


def fingerprint(text: str) -> str:
    """A short hash of a rendered ruleset, kept as the table's comment once it is applied."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def applied_fingerprint() -> str | None:
    """The fingerprint of the ruleset the kernel holds (read with `nft -t`: no set contents),
    or None if there is no table or it has no fingerprint."""
    proc = subprocess.run(["nft", "-t", "list", "table", FAMILY, TABLE], capture_output=True, text=True)
    found = re.search(r'comment "skillspot-ruleset ([0-9a-f]{16})"', proc.stdout) if proc.returncode == 0 else None
    return found.group(1) if found else None


def apply_ruleset(text: str, keep_elements: bool = True, only_if_changed: bool = False) -> int | None:
    """Check, then apply `text` atomically (it replaces the whole skillspot table).

    With keep_elements, every timed set element already in the kernel (live sessions,
    walled-garden addresses) is carried over with the time it has left, in the same
    transaction: reloading the firewall never logs anybody out. Returns how many were kept,
    or None when `only_if_changed` and the kernel already holds this very ruleset (the gate's
    start: re-applying 100,000 sessions costs tens of seconds for nothing).
    """
    fp = fingerprint(text)
    if only_if_changed and applied_fingerprint() == fp:
        return None
    marked = text.replace(f"table {FAMILY} {TABLE} {{\n", f'table {FAMILY} {TABLE} {{\n    comment "skillspot-ruleset {fp}"\n', 1)
    # The rules alone are checked first (cheap, and a clear message); the apply is one atomic
    # transaction with the carried elements, so a failure there also leaves the old table.
    _run_nft_file(marked, check=True)
    kept = surviving_elements() if keep_elements else []
    _run_nft_file(marked + "".join(kept), check=False)
    return sum(line.count(" timeout ") for line in kept)


def surviving_elements(chunk: int = 10_000) -> list[str]:
    """`add element` lines re-creating the current table's timed elements with their remaining
    time, many elements per line (one line per element made a reload with 100,000 devices slow)."""
    proc = subprocess.run(["nft", "-j", "list", "table", FAMILY, TABLE], capture_output=True, text=True)
    if proc.returncode != 0:
        return []  # no table yet: nothing to keep
    lines = []
    for item in json.loads(proc.stdout).get("nftables", []):
        s = item.get("set")
        if not s or s["name"] in (UP_METER, DOWN_METER):
            continue  # rate-limit state is rebuilt by traffic, not carried over
        # Keyed, because a dump taken while the kernel resizes the set can list an element twice.
        keys: dict[str, str] = {}
        for entry in s.get("elem", []):
            elem = entry.get("elem") if isinstance(entry, dict) else None
            if not elem or int(elem.get("expires", 0)) <= 0:
                continue
            val = elem["val"]
            key = " . ".join(val["concat"]) if isinstance(val, dict) else str(val)
            keys[key] = f"{key} timeout {int(elem['expires'])}s"
        timed = list(keys.values())
        for i in range(0, len(timed), chunk):
            lines.append(f"add element {FAMILY} {TABLE} {s['name']} {{ {', '.join(timed[i:i + chunk])} }}\n")
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


@dataclass(frozen=True)
class KernelState:
    """What the kernel holds in the gate's sets at one moment (read once at gate start)."""

    authorised: dict[tuple[str, str], tuple[int, int]]  # (mac, ip) -> (timeout, seconds left)
    active: Activity                                    # which (mac, ip) are not idle


class NftSets:
    """The gate's sets, changed through libnftables' JSON API: one netlink transaction per change.

    Nothing here lists a set on the login path. A change removes a device's elements with an
    `add` then `delete` of each key in the same transaction: `add` of an existing element is a
    no-op and `delete` of a missing one would fail the whole batch, so the pair removes the
    key whether or not the kernel still holds it (the idle element may have run out), without
    reading the set first. One instance per process; libnftables handles are not thread-safe.
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

    def table_exists(self) -> bool:
        """Whether the skillspot table is loaded."""
        try:
            self._cmd([{"list": {"table": {"family": FAMILY, "name": TABLE}}}])
        except NftError:
            return False
        return True

    def active_keys(self) -> Activity:
        """Every device that sent traffic within the idle time, as (mac, ip) and MACs."""
        try:
            packed = read_activity(TABLE, ACTIVE_SET, ACTIVE_MAC6_SET)
        except (SetDumpError, OSError) as exc:
            raise NftError(f"reading the idle sets: {exc}") from None
        return Activity(pairs=frozenset(mac_ipv4_of(k) for k in packed.pairs),
                        macs6=frozenset(mac_of(k) for k in packed.macs6))

    def dump(self) -> KernelState:
        """Everything the gate's sets hold now: for the gate's start, never per login."""
        # One netlink dump of this set (netcfg.setdump), not libnftables' JSON of the whole
        # table: at 10,000 devices that parse left the gate 35 MB larger for its whole life.
        try:
            timed = timed_elements(TABLE, AUTHORISED_SET)
        except (SetDumpError, OSError) as exc:
            raise NftError(f"reading the {AUTHORISED_SET} set: {exc}") from None
        authorised = {mac_ipv4_of(key): (timeout // 1000, left // 1000) for key, (timeout, left) in timed.items()}
        return KernelState(authorised=authorised, active=self.active_keys())

    def change(self, mac: str, remove_ips: list[str], add: tuple[str, int] | None) -> None:
        """In one transaction: remove `mac`'s elements for `remove_ips` (and its IPv6 element),
        then, if `add` is (ip, seconds), let (mac, ip) through for that long."""
        commands: list[dict] = []
        for ip in dict.fromkeys([*remove_ips, *([add[0]] if add else [])]):
            for set_name in (AUTHORISED_SET, ACTIVE_SET):
                commands += self._absent(set_name, {"concat": [mac, ip]})
        commands += self._absent(AUTHORISED_MAC6_SET, mac)
        commands += self._absent(ACTIVE_MAC6_SET, mac)
        # The forwarding fast path forgets the old address in the same transaction.
        commands += recent_removals(mac, remove_ips)
        if add is not None:
            ip, seconds = add
            if seconds <= 0:
                raise ValueError("seconds must be positive")
            commands.append(self._element("add", AUTHORISED_SET, {"elem": {"val": {"concat": [mac, ip]},
                                                                          "timeout": seconds}}))
            commands.append(self._element("add", AUTHORISED_MAC6_SET, {"elem": {"val": mac, "timeout": seconds}}))
            # The idle element takes the set's own timeout (portal.idle_seconds); traffic renews it.
            commands.append(self._element("add", ACTIVE_SET, {"concat": [mac, ip]}))
        self._cmd(commands)

    def _absent(self, set_name: str, key) -> list[dict]:
        return [self._element("add", set_name, key), self._element("delete", set_name, key)]

    @staticmethod
    def _element(verb: str, set_name: str, elem) -> dict:
        return {verb: {"element": {"family": FAMILY, "table": TABLE, "name": set_name, "elem": [elem]}}}
