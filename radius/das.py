"""Disconnect-Request (RFC 5176) to hostapd's DAS port: how the portal and admin end a
station's association (revoked client, portal session over)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from pyrad import packet as rp
from pyrad.client import Client, Timeout

from radius.attributes import hostapd_station_id, load_dictionary
from base.config import RadiusConfig

# RFC 5176 section 3.5 Error-Cause values hostapd uses, for readable details.
ERROR_CAUSES = {401: "Unsupported Attribute", 403: "NAS Identification Mismatch", 404: "Invalid Request",
                503: "Session Context Not Found", 506: "Resources Unavailable", 508: "Multiple Session Selection Unsupported"}


@dataclass(frozen=True)
class DisconnectResult:
    """What hostapd said: ACK (acked), NAK with its Error-Cause, or nothing (detail says)."""

    acked: bool
    error_cause: int | None
    detail: str


def disconnect(radius_cfg: RadiusConfig, mac: str, *, acct_session_id: str | None = None,
               nas_identifier: str | None = None, timeout: float = 3.0) -> DisconnectResult:
    """Ask hostapd to deauthenticate station `mac` (any usual notation; ValueError if not a MAC).

    The request names the station by Calling-Station-Id (and Acct-Session-Id if given),
    carries Event-Timestamp and Message-Authenticator, and the reply must carry a valid
    Message-Authenticator too. Never raises for network trouble: a timeout or socket error
    comes back as acked=False with the reason in detail, ready for record_disconnect."""
    station = hostapd_station_id(mac)
    target = f"{radius_cfg.das_address}:{radius_cfg.das_port}"
    if not radius_cfg.das_secret:
        return DisconnectResult(False, None, f"not sent: radius.das_secret is empty (DAS off) for {station}")
    client = Client(server=str(radius_cfg.das_address), coaport=radius_cfg.das_port,
                    secret=radius_cfg.das_secret.encode(), dict=load_dictionary(),
                    retries=1, timeout=timeout, enforce_ma=True)
    req = client.CreateCoAPacket(code=rp.DisconnectRequest)
    req.add_message_authenticator()
    req["Calling-Station-Id"] = station
    req["Event-Timestamp"] = int(time.time())
    if acct_session_id:
        req["Acct-Session-Id"] = acct_session_id
    if nas_identifier:
        req["NAS-Identifier"] = nas_identifier
    try:
        reply = client.SendPacket(req)
    except Timeout:
        return DisconnectResult(False, None, f"no valid answer from {target} within {timeout:g}s for {station}")
    except OSError as exc:
        return DisconnectResult(False, None, f"could not reach {target} for {station}: {exc}")
    if reply.code == rp.DisconnectACK:
        return DisconnectResult(True, None, f"Disconnect-ACK from {target} for {station}")
    cause = None
    if "Error-Cause" in reply:
        cause = int(reply["Error-Cause"][0])
    if reply.code == rp.DisconnectNAK:
        return DisconnectResult(False, cause, f"Disconnect-NAK from {target} for {station}: "
                                f"{cause} {ERROR_CAUSES.get(cause, '') if cause else 'no Error-Cause'}".rstrip())
    return DisconnectResult(False, cause, f"unexpected reply code {reply.code} from {target} for {station}")
