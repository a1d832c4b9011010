"""LINE's paths, in one place, shared by the client and the sandbox so the two cannot drift.

`AUTHORIZE` lives on `LineConfig.login_base_url` (https://access.line.me); the others on
`api_base_url` / `messaging_base_url` (https://api.line.me). Paths follow the LINE Login v2.1
and Messaging API references.
"""
from __future__ import annotations

AUTHORIZE = "/oauth2/v2.1/authorize"
TOKEN = "/oauth2/v2.1/token"
VERIFY = "/oauth2/v2.1/verify"
REVOKE = "/oauth2/v2.1/revoke"
PROFILE = "/v2/profile"
FRIENDSHIP = "/friendship/v1/status"
PUSH = "/v2/bot/message/push"

# Sandbox-only inspection and fault-injection paths (LINE has nothing like them).
SANDBOX_PUSHES = "/sandbox/pushes"
SANDBOX_FAULTS = "/sandbox/faults"
SANDBOX_USERS = "/sandbox/users"


def join(base_url: str, path: str) -> str:
    """`base_url` (with or without a trailing slash) followed by `path`."""
    return base_url.rstrip("/") + path
