"""Staging cost of sealing: CPU per staged flow row with and without sealing in the same
transaction (ledger.flows.stage_rows), as the flow logger writes them (2,500 rows per
transaction, a sealing transaction every 4th, unsealed rows carried in memory so the seal
hashes them without reading them back). Baseline: the same rows staged unsealed, same run.

    .venv/bin/python bench/stage_seal.py [--rows 50000] [--rounds 3]

Prints CPU microseconds per row for each round and the ratio sealed/unsealed. Not a test.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.db import open_ledger  # noqa: E402
from ledger.flows import stage_rows  # noqa: E402
from ledger.seal import load_or_create_key, verify  # noqa: E402


def run(path: Path, key, n: int, sealed: bool) -> float:
    led = open_ledger(path, "bench-box")
    now = led.now_ms()
    # Alternating NEW (open, no end) and DESTROY rows, as conntrack events come.
    rows = [(i, i % 2, now, None if i % 2 else now + 5, 17, 167772162, 10000 + i % 50000, 3405803777,
             30000 + i % 30000, 3405803778, 9000, 0, 0, 0) for i in range(n)]
    t = time.process_time()
    carry = None
    for k, j in enumerate(range(0, n, 2500)):
        batch = rows[j:j + 2500]
        sealing = sealed and k % 4 == 3
        done = stage_rows(led, batch, key if sealing else None, unsealed=carry)
        if sealing:
            carry = None
        elif sealed:
            carry = (carry[0], carry[1] + batch) if carry else (done.first_id, list(batch))
    if carry:
        stage_rows(led, [], key, unsealed=carry)
    spent = time.process_time() - t
    if sealed and not verify(led, key.public_key()).ok:
        raise SystemExit("the sealed ledger does not verify")
    led.close()
    return spent / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="skbench-stage-") as tmp:
        key = load_or_create_key(tmp)
        plain, sealed = [], []
        for r in range(max(1, args.rounds)):
            plain.append(run(Path(tmp) / f"plain{r}.sqlite", key, args.rows, False))
            sealed.append(run(Path(tmp) / f"sealed{r}.sqlite", key, args.rows, True))
    print(f"{args.rows:,} staged rows per run, CPU us/row")
    print(f"  unsealed: {', '.join(f'{x:.1f}' for x in plain)}")
    print(f"  sealed:   {', '.join(f'{x:.1f}' for x in sealed)}")
    print(f"  ratio sealed/unsealed (medians): {sorted(sealed)[len(sealed) // 2] / sorted(plain)[len(plain) // 2]:.2f}")


if __name__ == "__main__":
    main()
