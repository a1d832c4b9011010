"""The portal's own addresses, and the check that keeps every return URL inside the portal."""
from __future__ import annotations

from urllib.parse import urlsplit

from base.config import Config


def https_base_url(config: Config) -> str:
    """https://HOSTNAME[:HTTPS_PORT] (the port is left out when it is 443)."""
    port = config.portal.https_port
    return f"https://{config.portal.hostname}" + ("" if port == 443 else f":{port}")


def captive_api_url(config: Config) -> str:
    """The RFC 8908 Captive Portal API URL for DHCP option 114 / RA option 37 (HTTPS, < 255 bytes)."""
    return https_base_url(config) + "/api/captive"


def user_portal_url(config: Config) -> str:
    """The HTTPS page an OS opens for a captive client (RFC 8908 user-portal-url)."""
    return https_base_url(config) + "/"


def venue_info_url(config: Config) -> str:
    """RFC 8908 venue-info-url: the configured page, or the portal's own /venue page."""
    return config.portal.venue_info_url or https_base_url(config) + "/venue"


def safe_next(value: str | None) -> str | None:
    """`value` if it is a path on this portal ("/welcome", "/admin?x=1"), else None.

    Refused: anything with a scheme or host ("https://evil", "//evil", "/\\evil" which browsers
    read as "//evil"), control characters, and relative paths without a leading slash.
    """
    if not value or len(value) > 512 or not value.startswith("/"):
        return None
    if value.startswith("//") or "\\" in value or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value
