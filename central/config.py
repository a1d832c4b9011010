"""The centre's configuration: one TOML file (its own, not the box's), validated at start.

Errors name the key, the value given and the fix, like the box's config.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from central.admin.settings import AdminSettings
from central.oa.settings import OaSettings


class CentralConfigError(Exception):
    """The centre's config is missing, unreadable or invalid; str() is for humans."""


class Section(BaseModel):
    """Unknown keys are errors, so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    bind: Annotated[str, Field(pattern=r"^[^\s:]+:\d{1,5}$",
                               description='address:port gunicorn listens on, e.g. "127.0.0.1:8440"')] = "127.0.0.1:8440"
    threads: Annotated[int, Field(ge=2, le=64, description="request threads of the one gunicorn worker (chDB allows one process per data folder)")] = 8
    timeout_s: Annotated[int, Field(ge=10, le=600, description="gunicorn worker timeout, seconds")] = 120
    trusted_proxies: Annotated[int, Field(ge=0, le=5, description="reverse proxies in front that set X-Forwarded-For (0: none); the address a box is seen from comes from them")] = 0


class StoreSettings(Section):
    url: Annotated[str, Field(description='ClickHouse server URL, e.g. "https://ch.dsd.go.th:8443"; empty: embedded chDB in data_dir/chdb')] = ""
    database: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", description="ClickHouse database name")] = "skillspot"
    username: Annotated[str, Field(description="ClickHouse user (server only)")] = "default"
    password_env: Annotated[str, Field(description="name of the environment variable holding the ClickHouse password (never the password itself)")] = "SKILLSPOT_CLICKHOUSE_PASSWORD"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("fix: write the server URL with http:// or https://, or leave it empty for embedded chDB")
        return v


class ApiSettings(Section):
    replay_window_s: Annotated[int, Field(ge=30, le=3600, description="how far a request's timestamp may be from the centre's clock, seconds")] = 300
    max_batch_mb: Annotated[int, Field(ge=1, le=512, description="largest compressed batch accepted, MB")] = 64
    enrol_code_hours: Annotated[int, Field(ge=1, le=720, description="how long a new enrolment code stays valid, hours")] = 72


class RetentionSettings(Section):
    days: Annotated[int, Field(ge=90, le=730, description="keep traffic data this many days after the session ends; the law's floor is 90")] = 90


class PushSettings(Section):
    terms_version: Annotated[str | None, Field(description="the terms version boxes must show (empty: boxes keep their own)")] = None
    blocklist_file: Annotated[str, Field(description="JSON file of blocklist entries pushed to boxes (empty: none)")] = ""


class CentralConfig(Section):
    """The whole file."""

    data_dir: Annotated[Path, Field(description="a writable directory for the app database, chDB data and the centre key, e.g. /var/lib/skillspot-central")]
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    api: ApiSettings = ApiSettings()
    retention: RetentionSettings = RetentionSettings()
    push: PushSettings = PushSettings()
    admin: AdminSettings = AdminSettings()
    oa: OaSettings = OaSettings()

    @property
    def appdb_path(self) -> Path:
        """The SQLite app database."""
        return self.data_dir / "central.sqlite"

    @property
    def chdb_path(self) -> Path:
        """The embedded chDB data folder (one process at a time)."""
        return self.data_dir / "chdb"

    @property
    def key_path(self) -> Path:
        """The centre's Ed25519 key that signs receipts."""
        return self.data_dir / "centre_ed25519.pem"


def _hint(loc: tuple) -> str:
    model: type[BaseModel] | None = CentralConfig
    hint = ""
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            continue
        f = model.model_fields[part]
        hint = f.description or hint
        model = f.annotation if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) else None
    return hint


def parse(data: dict, source: str = "central config") -> CentralConfig:
    """Validate a parsed TOML document; CentralConfigError lists every problem with its fix."""
    try:
        return CentralConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"{source}: {err.error_count()} problem(s):"]
        for e in err.errors(include_url=False):
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "missing":
                lines.append(f"  [{key}] is missing. Fix: add it: {_hint(e['loc'])}")
            elif e["type"] == "extra_forbidden":
                lines.append(f"  [{key}] is not a known key. Fix: remove it or check its spelling and section")
            else:
                fix = msg if "fix:" in msg else f"{msg}. Fix: {_hint(e['loc']) or 'see examples/central.toml'}"
                lines.append(f"  [{key}] = {e.get('input')!r}: {fix}")
        raise CentralConfigError("\n".join(lines)) from None


def load(path: str | Path) -> CentralConfig:
    """Read and validate the centre's TOML file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CentralConfigError(f"{path}: cannot read the centre's configuration: {exc.strerror}. "
                                 "Fix: pass --config or set SKILLSPOT_CENTRAL_CONFIG") from None
    except UnicodeDecodeError:
        raise CentralConfigError(f"{path}: not UTF-8. Fix: save the file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CentralConfigError(f"{path}: not valid TOML: {exc}. Fix: correct the syntax at that line") from None
    return parse(data, str(path))
