"""The `[admin]` section of the centre's config (embedded by central/config.py)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AdminSettings(BaseModel):
    """Central admin pages: session lifetimes, the silent-box threshold, search defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    silent_after_s: int = Field(900, ge=60, description="a box not heard from for longer is flagged silent")
    default_slack_s: int = Field(60, ge=0, le=3600, description="clock slack offered on the attribution form")
    max_slack_s: int = Field(3600, ge=0, description="largest clock slack a search may ask for")
    session_idle_s: int = Field(1800, ge=60, description="an admin idle this long must log in again")
    session_max_s: int = Field(12 * 3600, ge=300, description="an admin session never lasts longer")
    max_export_days: int = Field(31, ge=1, description="longest window one export may cover")
    proxy_hops: int = Field(0, ge=0, le=5, description="reverse proxies in front of the centre that append to "
                            "X-Forwarded-For (nginx: 1); 0 trusts no such header")
    secure_cookies: bool = Field(True, description="cookies only over HTTPS (keep true outside tests on localhost)")
