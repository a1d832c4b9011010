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

# Messaging API beyond push (Messaging API reference).
REPLY = "/v2/bot/message/reply"
MULTICAST = "/v2/bot/message/multicast"
NARROWCAST = "/v2/bot/message/narrowcast"
NARROWCAST_PROGRESS = "/v2/bot/message/progress/narrowcast"
BROADCAST = "/v2/bot/message/broadcast"
QUOTA = "/v2/bot/message/quota"
QUOTA_CONSUMPTION = "/v2/bot/message/quota/consumption"
RICHMENU = "/v2/bot/richmenu"
RICHMENU_CONTENT = "/v2/bot/richmenu/<rich_menu_id>/content"  # on api-data.line.me
USER_RICHMENU = "/v2/bot/user/<user_id>/richmenu"
USER_RICHMENU_LINK = "/v2/bot/user/<user_id>/richmenu/<rich_menu_id>"
DEFAULT_RICHMENU = "/v2/bot/user/all/richmenu/<rich_menu_id>"
AUDIENCE_UPLOAD = "/v2/bot/audienceGroup/upload"
AUDIENCE_GROUP = "/v2/bot/audienceGroup/<int:audience_group_id>"
INSIGHT_MESSAGE_EVENT = "/v2/bot/insight/message/event"
SANDBOX_WEBHOOK = "/sandbox/webhook"
SANDBOX_EVENTS = "/sandbox/events"
SANDBOX_SENT = "/sandbox/sent"
BOT_PROFILE = "/v2/bot/profile/<user_id>"
