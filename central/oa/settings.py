"""[oa] section of the centre's TOML: the DSD Official Account (Messaging API channel)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class OaSettings(BaseModel):
    """Unknown keys are errors. Secrets are named by environment variable, never written here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: Annotated[bool, Field(description="serve the webhook at /line/webhook and run the OA worker")] = False
    channel_secret_env: Annotated[str, Field(description="environment variable holding the Messaging API channel secret (signs webhooks)")] = "SKILLSPOT_OA_CHANNEL_SECRET"
    access_token_env: Annotated[str, Field(description="environment variable holding the Messaging API channel access token")] = "SKILLSPOT_OA_ACCESS_TOKEN"
    api_base_url: Annotated[str, Field(pattern=r"^https?://", description='Messaging API host: "https://api.line.me" (or the sandbox\'s URL)')] = "https://api.line.me"
    http_timeout_s: Annotated[float, Field(gt=0, le=60, description="timeout of one call to LINE, seconds")] = 10.0
    oa_basic_id: Annotated[str, Field(description='the OA\'s basic ID, e.g. "@dsd", for the check-in QR link')] = "@dsd"
    checkin_early_min: Annotated[int, Field(ge=0, le=240, description="a class's check-in code works this many minutes before it starts")] = 30
    jobs_per_week: Annotated[int, Field(ge=0, le=20, description="at most this many job messages per person per week")] = 3
    worker_poll_s: Annotated[float, Field(gt=0, le=60, description="how often the worker looks for due work, seconds")] = 2.0
    wifi_checkin_every_s: Annotated[float, Field(gt=0, le=3600, description="how often new WiFi logins are matched to classes, seconds")] = 60.0
