"""The RADIUS hook for hostapd: MAC authorisation, accounting and Disconnect (RFC 5176)."""
