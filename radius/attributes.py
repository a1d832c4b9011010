"""The RADIUS dictionary shipped in this package and hostapd's attribute spellings."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from pyrad.dictionary import Dictionary

from base.addr import normalise_mac

# RFC 2865 section 3: a RADIUS packet is at most 4096 octets.
MAX_PACKET = 4096
NAS_PORT_TYPE_WIRELESS_80211 = 19


@lru_cache(maxsize=1)
def load_dictionary() -> Dictionary:
    """pyrad's Dictionary built from radius/dictionary (parsed once per process)."""
    with resources.as_file(resources.files("radius").joinpath("dictionary")) as path:
        return Dictionary(str(path))


def hostapd_user_name(mac: str) -> str:
    """A MAC as hostapd sends it in User-Name/User-Password for MAC ACL: 'aabbccddeeff'."""
    return normalise_mac(mac).replace(":", "")


def hostapd_station_id(mac: str) -> str:
    """A MAC as hostapd sends it in Calling-Station-Id: 'AA-BB-CC-DD-EE-FF'."""
    return normalise_mac(mac).replace(":", "-").upper()
