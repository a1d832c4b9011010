"""Test-only fault points: a named step where a test can make the process die at once.

The crash tests set SKILLSPOT_FAULT=<point>[,<point>...] for the process under test; at that
step it exits with FAULT_EXIT without unwinding (os._exit: no finally blocks, no flushes), as a
power cut or a kill -9 would. Unset, a fault point costs one dictionary look-up.
"""
from __future__ import annotations

import os

FAULT_EXIT = 86
ENV = "SKILLSPOT_FAULT"


def fault(point: str) -> None:
    """Die here if the environment names this point."""
    wanted = os.environ.get(ENV)
    if wanted and point in wanted.split(","):
        os.write(2, f"fault point {point}: exiting {FAULT_EXIT}\n".encode())
        os._exit(FAULT_EXIT)
