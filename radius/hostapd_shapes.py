"""Requests shaped exactly as hostapd 2.10 builds them, for tests and the bench.

Taken from hostapd's src/ap/ieee802_11_auth.c (MAC ACL query) and src/ap/accounting.c, and
checked against a live hostapd 2.10 (driver=wired). One place, so that every test and the
bench feed the server the same attributes hostapd would. Attribute values are Python
values; `radclient_text` renders them in FreeRADIUS's radclient packet-file syntax.
"""
from __future__ import annotations

from radius.attributes import NAS_PORT_TYPE_WIRELESS_80211, hostapd_station_id, hostapd_user_name

Attrs = list[tuple[str, object]]


def mac_acl_request(mac: str, *, bssid: str, ssid: str, nas_identifier: str, nas_ip: str = "127.0.0.1") -> Attrs:
    """The Access-Request hostapd sends with macaddr_acl=2 (Message-Authenticator is added
    by whoever encodes it: hostapd 2.10 puts it last, 2.11 first)."""
    user = hostapd_user_name(mac)
    return [
        ("User-Name", user),
        ("User-Password", user),
        ("NAS-IP-Address", nas_ip),
        ("NAS-Identifier", nas_identifier),
        ("Called-Station-Id", f"{hostapd_station_id(bssid)}:{ssid}"),
        ("Calling-Station-Id", hostapd_station_id(mac)),
        ("NAS-Port-Type", NAS_PORT_TYPE_WIRELESS_80211),
        ("Connect-Info", "CONNECT 11Mbps 802.11b"),
    ]


def accounting_request(status_type: int, *, mac: str | None, session_id: str, bssid: str, ssid: str,
                       nas_identifier: str, event_timestamp: int, delay: int = 0, nas_ip: str = "127.0.0.1",
                       session_time: int | None = None, input_octets: int | None = None,
                       output_octets: int | None = None, input_packets: int | None = None,
                       output_packets: int | None = None, terminate_cause: int | None = None) -> Attrs:
    """An Accounting-Request as hostapd sends it. mac=None gives Accounting-On/Off (no
    station attributes). Octet counts are 64-bit and split into Gigawords like hostapd."""
    attrs: Attrs = [("Acct-Status-Type", status_type)]
    if mac is not None:
        attrs.append(("User-Name", hostapd_user_name(mac)))
    attrs += [("NAS-IP-Address", nas_ip), ("NAS-Identifier", nas_identifier),
              ("Called-Station-Id", f"{hostapd_station_id(bssid)}:{ssid}"),
              ("NAS-Port-Type", NAS_PORT_TYPE_WIRELESS_80211)]
    if mac is not None:
        attrs += [("Acct-Authentic", 2), ("Service-Type", 2), ("NAS-Port", 1),
                  ("Calling-Station-Id", hostapd_station_id(mac)), ("Connect-Info", "CONNECT 54Mbps 802.11g")]
    attrs += [("Acct-Session-Id", session_id), ("Event-Timestamp", event_timestamp), ("Acct-Delay-Time", delay)]
    if session_time is not None:
        attrs.append(("Acct-Session-Time", session_time))
    for name, giga, value in (("Acct-Input-Octets", "Acct-Input-Gigawords", input_octets),
                              ("Acct-Output-Octets", "Acct-Output-Gigawords", output_octets)):
        if value is not None:
            attrs += [(name, value & 0xFFFFFFFF), (giga, value >> 32)]
    if input_packets is not None:
        attrs.append(("Acct-Input-Packets", input_packets))
    if output_packets is not None:
        attrs.append(("Acct-Output-Packets", output_packets))
    if terminate_cause is not None:
        attrs.append(("Acct-Terminate-Cause", terminate_cause))
    return attrs


def radclient_text(attrs: Attrs, *, message_authenticator: bool = False) -> str:
    """One packet in radclient's -f file syntax (packets are separated by a blank line).

    Event-Timestamp is written as a number, which FreeRADIUS 3 accepts for `date`."""
    parts = []
    for name, value in attrs:
        parts.append(f'{name} = {value}' if isinstance(value, int) else f'{name} = "{value}"')
    if message_authenticator:
        parts.append("Message-Authenticator = 0x00")
    return ",\n".join(parts) + "\n"
