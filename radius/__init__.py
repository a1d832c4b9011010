"""The RADIUS hook for hostapd: MAC authorisation, accounting and Disconnect (RFC 5176).

server.py: the pyrad-based server run by `skillspot radius` (auth and accounting into the
ledger); das.py: `disconnect()` for the portal and admin; policy.py: who may associate;
attributes.py: the dictionary shipped here and hostapd's MAC spellings; hostapd_shapes.py:
requests exactly as hostapd builds them (tests, bench). See docs/radius.md.
"""
