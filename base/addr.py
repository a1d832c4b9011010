"""Address notations shared by every package (MACs arrive in three spellings)."""
from __future__ import annotations

import re


def normalise_mac(mac: str) -> str:
    """Any usual MAC notation to lowercase colon form: 'AA-BB-CC-DD-EE-FF' -> 'aa:bb:cc:dd:ee:ff'."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", mac)
    if len(digits) != 12 or len(mac) > 17:
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2)).lower()
