"""Shared fixtures. Tests marked `netns` need root; they are skipped, loudly, without it."""
from __future__ import annotations

import os

import pytest

# Test configs carry made-up secrets (many start from examples/skillspot.toml): this is the
# documented override that lets `skillspot portal`/`radius`/`gate` start with them. The tests
# of the refusal itself remove it.
os.environ.setdefault("SKILLSPOT_ALLOW_EXAMPLE_SECRETS", "1")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)
