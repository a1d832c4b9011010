"""Which of the gate's devices have gone idle: the keys the kernel's idle set no longer holds.

The sweeper needs this every few seconds. Reading the idle set means one netlink dump and one
`json.loads` of libnftables' answer, which at 100,000 devices is about 15 MB of JSON: the
decoder holds the interpreter lock for the whole parse (a C call), so in the gate's own
process every socket request (a login's authorise, a portal's question) waited behind it.
Above `CHILD_ABOVE` devices (5,000; from about that size the read in process showed in the portal's page rates) the read runs in a child process, `python -m netcfg.idlescan`,
which gets the gate's keys on stdin and prints only the idle ones: the gate's interpreter
writes one line per device and reads a few back. Below it the read is cheap and stays in
process (a child's start costs more than the read).

A key missing from one dump is read a second time before it counts as idle. The kernel dumps
a hash set in chunks and each chunk walks the table again, skipping the elements already sent
by count; if the table is resized between chunks (it grows and shrinks with the number of
devices) the order changes, so one dump can repeat some elements and leave out others. A
repeat was seen in CI (70,000 elements listed as 70,001); a left-out active device would have
been ended as idle. Two dumps that both leave out the same active element would need two
resizes landing on it, so the second read settles it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Iterable

Key = tuple[str, str]  # (mac, ip)
CHILD_ABOVE = 5_000
CHILD_TIMEOUT_SECONDS = 120.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IdleScanError(Exception):
    """The idle set could not be read; the message says why (the sweep tries again later)."""


def idle_among(keys: Iterable[Key], active_keys: Callable[[], set[Key]],
               child_above: int = CHILD_ABOVE) -> set[Key]:
    """The members of `keys` that the idle set does not hold. `active_keys` reads the set in
    this process (used when there are at most `child_above` keys)."""
    keys = list(keys)
    if len(keys) <= child_above:
        return missing_twice(keys, active_keys)
    return _idle_in_child(keys)


def missing_twice(keys: Iterable[Key], read: Callable[[], set[Key]]) -> set[Key]:
    """The keys that two reads of the set both leave out (see the module's note on dumps);
    the second read happens only if the first leaves something out."""
    active = read()
    missing = {k for k in keys if k not in active}
    if missing:
        active = read()
        missing = {k for k in missing if k not in active}
    return missing


def _idle_in_child(keys: list[Key]) -> set[Key]:
    text = "".join(f"{mac} {ip}\n" for mac, ip in keys)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", "netcfg.idlescan"], input=text, capture_output=True,
                              text=True, env=env, timeout=CHILD_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IdleScanError(f"reading the idle set in a child process failed: {exc}") from None
    if proc.returncode != 0:
        raise IdleScanError(f"reading the idle set failed: {proc.stderr.strip()[-300:]}")
    return {tuple(line.split(" ", 1)) for line in proc.stdout.splitlines() if line}  # type: ignore[misc]


def main() -> int:
    """Child side: keys on stdin ("MAC IP" lines), the idle ones on stdout."""
    from netcfg.nft import NftError, NftSets
    keys = []
    for line in sys.stdin:
        mac, _, ip = line.strip().partition(" ")
        if mac:
            keys.append((mac, ip))
    try:
        idle = missing_twice(keys, NftSets().active_keys)
    except NftError as exc:
        print(f"idle scan: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(f"{mac} {ip}\n" for mac, ip in idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
