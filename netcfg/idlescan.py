"""Which of the gate's devices have gone idle: the keys the kernel's idle set no longer holds.

The sweeper needs this every pass. The set is read with one netlink dump of that set alone
(netcfg.setdump; libnftables' `list set` cost eight times as much CPU at 100,000 devices). Even so, going through 100,000 elements
is about 0.3 s of Python, and in the gate's own process every socket request (a login's
authorise, a portal's question) would wait for the interpreter lock behind it. So above
`CHILD_ABOVE` devices (5,000) the read runs in a child process, `python -m netcfg.idlescan`,
which gets the gate's keys on stdin and prints only the idle ones. Below it the read is cheap
and stays in process (a child's start costs more than the read).

A key missing from one dump is read a second time before it counts as idle. The kernel dumps
a hash set in chunks and each chunk walks the table again, skipping the elements already sent
by count; if the table is resized between chunks (it grows and shrinks with the number of
devices) the order changes, so one dump can repeat some elements and leave out others (an
element deleted between chunks shifts the count the same way). A
repeat was seen in CI (70,000 elements listed as 70,001); a left-out active device would have
been ended as idle. Two dumps that both leave out the same active element would need two
resizes landing on it, so the second read settles it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Container, Iterable, TypeVar

Key = tuple[str, str]  # (mac, ip)
K = TypeVar("K")
CHILD_ABOVE = 5_000
CHILD_TIMEOUT_SECONDS = 120.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Activity:
    """Who sent traffic within the idle time: `pairs` from the IPv4 idle set, `macs6` from the
    IPv6 one. A device (mac, ip) is active if either holds it. Keys are either (mac, ip) tuples
    and MAC strings, or the kernel's packed bytes (netcfg.setdump) for both."""

    pairs: frozenset
    macs6: frozenset

    def __contains__(self, key) -> bool:
        return key in self.pairs or (key[:6] if isinstance(key, bytes) else key[0]) in self.macs6


def read_activity(table: str, pairs_set: str, macs6_set: str) -> Activity:
    """The idle sets' keys as the kernel packs them: one netlink dump of each set alone
    (netcfg.setdump). Raises SetDumpError."""
    from netcfg.setdump import set_keys
    return Activity(pairs=frozenset(set_keys(table, pairs_set)), macs6=frozenset(set_keys(table, macs6_set)))


class IdleScanError(Exception):
    """The idle set could not be read; the message says why (the sweep tries again later)."""


def idle_among(keys: Iterable[Key], active_keys: Callable[[], Container[Key]],
               child_above: int = CHILD_ABOVE) -> set[Key]:
    """The members of `keys` that the idle set does not hold. `active_keys` reads the set in
    this process (used when there are at most `child_above` keys)."""
    keys = list(keys)
    if len(keys) <= child_above:
        return missing_twice(keys, active_keys)
    return _idle_in_child(keys)


def missing_twice(keys: Iterable[K], read: Callable[[], Container[K]]) -> set[K]:
    """The keys that two reads of the set both leave out (see the module's note on dumps);
    the second read happens only if the first leaves something out."""
    active = read()
    missing = {k for k in keys if k not in active}
    if missing:
        active = read()
        missing = {k for k in missing if k not in active}
    return missing


def _idle_in_child(keys: list[Key]) -> set[Key]:
    from netcfg.ruleset import ACTIVE_MAC6_SET, ACTIVE_SET, TABLE  # loaded already in the gate
    text = "".join(f"{mac} {ip}\n" for mac, ip in keys)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", "netcfg.idlescan", TABLE, ACTIVE_SET, ACTIVE_MAC6_SET],
                              input=text, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IdleScanError(f"reading the idle set in a child process failed: {exc}") from None
    if proc.returncode != 0:
        raise IdleScanError(f"reading the idle set failed: {proc.stderr.strip()[-300:]}")
    return {tuple(line.split(" ", 1)) for line in proc.stdout.splitlines() if line}  # type: ignore[misc]


def main() -> int:
    """Child side, `python -m netcfg.idlescan TABLE IPV4_SET IPV6_SET`: keys on stdin ("MAC IP"
    lines), the idle ones on stdout. Keys are compared as the kernel packs them, so the 100,000
    elements of the dump are never decoded. The set names come from the parent so that this
    imports only netcfg.setdump: libnftables and the config model (through netcfg.ruleset) cost
    165 ms of start-up on every sweep pass."""
    from netcfg.setdump import SetDumpError, mac_ipv4_key
    packed: dict[bytes, str] = {}
    for line in sys.stdin:
        mac, _, ip = line.strip().partition(" ")
        if mac:
            packed[mac_ipv4_key(mac, ip)] = line if line.endswith("\n") else line + "\n"
    try:
        idle = missing_twice(packed, lambda: read_activity(*sys.argv[1:4]))
    except (SetDumpError, OSError) as exc:
        print(f"idle scan: reading the idle sets: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(packed[key] for key in idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
