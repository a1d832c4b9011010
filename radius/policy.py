"""Who may associate: the MAC-authorisation decision, separate from packet handling."""
from __future__ import annotations

from dataclasses import dataclass

from base.addr import normalise_mac
from base.config import RadiusConfig


@dataclass(frozen=True)
class Verdict:
    """accept or reject, with the reason recorded in the ledger."""

    accept: bool
    reason: str


class MacPolicy:
    """The block list from config; every other well-formed MAC is let onto the open SSID
    (the captive portal, not RADIUS, decides who gets through to the Internet)."""

    def __init__(self, cfg: RadiusConfig) -> None:
        self.blocked = frozenset(normalise_mac(m) for m in cfg.block_list)

    def decide(self, user_name: str, password: str | None, calling_station_id: str | None) -> tuple[str | None, Verdict]:
        """Judge one request as hostapd builds it; returns (normalised MAC or None, verdict)."""
        try:
            mac = normalise_mac(user_name)
        except ValueError:
            return None, Verdict(False, "user-name-not-a-mac")
        if password is not None and password.lower() != user_name.lower():
            # hostapd puts the MAC in both; a mismatch is a forged request or a wrong secret.
            return mac, Verdict(False, "password-mismatch")
        if calling_station_id is not None:
            try:
                if normalise_mac(calling_station_id) != mac:
                    return mac, Verdict(False, "calling-station-id-mismatch")
            except ValueError:
                return mac, Verdict(False, "calling-station-id-not-a-mac")
        if mac in self.blocked:
            return mac, Verdict(False, "blocked")
        return mac, Verdict(True, "allowed")
