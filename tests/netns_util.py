"""A throw-away network namespace for tests that need a kernel of their own."""
from __future__ import annotations

import subprocess
import uuid
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def scratch_namespace(prefix: str = "sku") -> Iterator[str]:
    """Yield the name of a new, empty namespace; it is removed afterwards, whatever happens."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_ns(ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv inside namespace `ns`."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kw)
