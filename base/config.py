"""The one configuration file (TOML), validated at start-up.

This module is the only place that reads the file; every package receives the typed
sections it needs as arguments. Validation uses pydantic so that an error can name the
key, the value that was given and what to write instead.
"""
from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IFNAME = r"^[A-Za-z0-9_.-]{1,15}$"
HOSTNAME = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; str() is for humans."""


class Section(BaseModel):
    """Base for every section: unknown keys are errors, so a typo is never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BoxConfig(Section):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$",
                             description='a short box id of lowercase letters, digits and dashes, e.g. "dsd-bkk-01"')]
    office: Annotated[str, Field(min_length=1, description="the office's name as officials know it")]
    data_dir: Annotated[Path, Field(description="a writable directory for the ledger and state, e.g. /var/lib/skillspot")]
    coordinator: Annotated[str, Field(default="", description="who officials contact about traffic data (name, phone)")]


class NetworkConfig(Section):
    lan_interface: Annotated[str, Field(pattern=IFNAME, description='the visitors\' interface name, e.g. "wlan0" (at most 15 characters)')]
    wan_interface: Annotated[str, Field(pattern=IFNAME, description='the uplink interface name, e.g. "eth0"')]
    lan_address: Annotated[ipaddress.IPv4Interface, Field(description='the box\'s LAN address with prefix, e.g. "10.99.0.1/24"')]
    dhcp_range: Annotated[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address],
                          Field(description='first and last address handed out, e.g. ["10.99.0.50", "10.99.0.250"], inside lan_address\'s network')]
    lease_seconds: Annotated[int, Field(ge=120, le=86400, description="DHCP lease length in seconds, 120 to 86400")] = 3600
    upstream_dns: Annotated[list[ipaddress.IPv4Address], Field(min_length=1, description='resolvers dnsmasq forwards to, e.g. ["1.1.1.1"]')]
    walled_garden: Annotated[list[Annotated[str, Field(pattern=HOSTNAME)]],
                             Field(description="domain suffixes unauthorised clients may reach (the LINE login hosts), e.g. [\"line.me\", \"line-scdn.net\"]")] = [
        "line.me", "line-scdn.net", "line-apps.com", "lin.ee", "line-cdn.net"]
    walled_garden_ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]],
                                   Field(description="TCP ports open to walled-garden addresses, e.g. [443]")] = [443]
    ipv6: Annotated[Literal["off", "on"], Field(description='"off": nothing IPv6 is forwarded for anyone and the box sends no router advertisements; "on": the box advertises ipv6_prefix and forwards IPv6 from logged-in devices inside it')] = "off"
    ipv6_prefix: Annotated[ipaddress.IPv6Network | None, Field(description='the /64 the box advertises on the LAN when ipv6 = "on" (routed to the box by the uplink), e.g. "2001:db8:10:1::/64"; the box takes its ::1')] = None
    unauthorised_dns_queries_per_second: Annotated[int, Field(ge=1, le=50, description="DNS queries a second a device not yet logged in may send after its burst (the DNS-tunnel bound), 1 to 50")] = 2
    unauthorised_dns_burst: Annotated[int, Field(ge=10, le=1000, description="DNS queries a device not yet logged in may send at once before the per-second limit applies, 10 to 1000")] = 80

    @model_validator(mode="after")
    def _range_inside_lan(self) -> "NetworkConfig":
        net = self.lan_address.network
        first, last = self.dhcp_range
        for addr in (first, last):
            if addr not in net:
                raise ValueError(f"dhcp_range address {addr} is outside {net}; fix: pick addresses inside lan_address's network")
        if first > last:
            raise ValueError(f"dhcp_range starts at {first} after it ends at {last}; fix: write the lower address first")
        if self.lan_address.ip in (first, last) or first <= self.lan_address.ip <= last:
            raise ValueError(f"dhcp_range contains the box's own address {self.lan_address.ip}; fix: start the range after it")
        if self.lan_interface == self.wan_interface:
            raise ValueError("lan_interface and wan_interface are the same; fix: name two different interfaces")
        if self.ipv6 == "on":
            prefix = self.ipv6_prefix
            if prefix is None:
                raise ValueError('ipv6 = "on" needs ipv6_prefix; fix: set the /64 your uplink routes to the box, '
                                 'e.g. ipv6_prefix = "2001:db8:10:1::/64", or set ipv6 = "off"')
            if prefix.prefixlen != 64:
                raise ValueError(f"ipv6_prefix {prefix} is a /{prefix.prefixlen}; fix: use a /64 (phones form "
                                 "their addresses by SLAAC, which needs exactly 64 bits)")
            if not prefix.is_global and not prefix.subnet_of(ipaddress.IPv6Network("2001:db8::/32")) \
                    and not prefix.subnet_of(ipaddress.IPv6Network("fc00::/7")):
                raise ValueError(f"ipv6_prefix {prefix} is not a global or unique-local prefix; fix: use the /64 "
                                 "your uplink routes to the box")
        elif self.ipv6_prefix is not None:
            raise ValueError('ipv6_prefix is set but ipv6 = "off", so it would be ignored; fix: set ipv6 = "on" '
                             "or remove ipv6_prefix")
        return self

    @property
    def lan_address6(self) -> ipaddress.IPv6Interface | None:
        """The box's own address in ipv6_prefix (its ::1), when IPv6 is on."""
        if self.ipv6 != "on" or self.ipv6_prefix is None:
            return None
        return ipaddress.IPv6Interface(f"{self.ipv6_prefix.network_address + 1}/64")


class PortalConfig(Section):
    hostname: Annotated[str, Field(pattern=HOSTNAME, description='the portal\'s DNS name, resolved to the LAN address by the box, e.g. "wifi.dsd.go.th"')]
    http_port: Annotated[int, Field(ge=1, le=65535, description="where intercepted HTTP (port 80) is redirected on the box, e.g. 8080")] = 8080
    https_port: Annotated[int, Field(ge=1, le=65535, description="the HTTPS portal and RFC 8908 API port, e.g. 8443")] = 8443
    public_base_url: Annotated[str, Field(default="", description='URL visitors are sent to, e.g. "https://wifi.dsd.go.th:8443"; empty means http://HOSTNAME:HTTP_PORT')]
    session_seconds: Annotated[int, Field(ge=1, le=7 * 86400, description="how long one login lets a device through, in seconds (1 to 604800)")] = 4 * 3600
    secret_key: Annotated[str, Field(min_length=32, description="at least 32 random characters signing browser sessions; generate with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")]
    bot_prompt: Annotated[Literal["aggressive", "normal", "none"], Field(description='how LINE offers the DSD Official Account: "aggressive", "normal" or "none"')] = "aggressive"
    terms_version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$", description='the version of the terms and PDPA notice shown, e.g. "2026-11"')] = "2026-11"
    workers: Annotated[int, Field(ge=1, le=16, description="gunicorn worker processes, 1 to 16")] = 2
    tls_cert: Annotated[Path | None, Field(description="PEM certificate for the HTTPS portal (optional)")] = None
    tls_key: Annotated[Path | None, Field(description="PEM private key for tls_cert (optional)")] = None
    idle_seconds: Annotated[int, Field(ge=30, le=86400, description="a device silent this long drops out (the kernel forgets it; it logs in again), seconds, 30 to 86400")] = 900
    bandwidth_kbit: Annotated[int, Field(ge=0, le=1_000_000, description="per-device cap in each direction, kbit/s (0: no cap), e.g. 10000 for 10 Mbit/s")] = 0
    returning_days: Annotated[int, Field(ge=0, le=90, description="a device whose LINE login is younger than this many days is let in again on reconnect without the portal (0: never), 0 to 90")] = 7
    max_devices_per_user: Annotated[int, Field(ge=1, le=20, description="devices one LINE user may have online at once; a new one revokes the oldest, 1 to 20")] = 3
    venue_info_url: Annotated[str, Field(default="", pattern=r"^(https://.*)?$", description='an HTTPS page about the venue for RFC 8908 venue-info-url, e.g. "https://www.dsd.go.th"; empty: the portal\'s own /venue page')]

    @model_validator(mode="after")
    def _tls_pair(self) -> "PortalConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together; fix: set both or neither")
        return self

    @property
    def base_url(self) -> str:
        """The URL the portal is reached at, as visitors' browsers see it."""
        return self.public_base_url.rstrip("/") or f"http://{self.hostname}:{self.http_port}"


class AdminConfig(Section):
    users: Annotated[dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,31}$")],
                          Annotated[str, Field(pattern=r"^(scrypt|pbkdf2):")]],
                     Field(description='admin names and password hashes, e.g. {somsak = "scrypt:..."}; make a hash with: skillspot admin hash-password')] = {}
    networks: Annotated[list[ipaddress.IPv4Network],
                        Field(description='management networks the admin pages answer (over HTTPS only), e.g. ["192.168.1.0/24"]; never the visitor LAN; empty: the box itself only (reach it with ssh -L)')] = []
    session_minutes: Annotated[int, Field(ge=5, le=720, description="an admin login lasts this many minutes, 5 to 720")] = 60


class LineConfig(Section):
    channel_id: Annotated[str, Field(pattern=r"^[0-9]{6,12}$", description="the LINE Login channel ID (digits), from the LINE Developers console")]
    channel_secret: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="the LINE Login channel secret (32 lowercase hex digits)")]
    login_base_url: Annotated[str, Field(pattern=r"^https?://", description='where the authorize page lives: "https://access.line.me" (or the sandbox\'s URL)')] = "https://access.line.me"
    api_base_url: Annotated[str, Field(pattern=r"^https?://", description='where the token/verify/profile API lives: "https://api.line.me" (or the sandbox\'s URL)')] = "https://api.line.me"
    issuer: Annotated[str, Field(description='the "iss" expected in ID tokens; LINE uses "https://access.line.me"')] = "https://access.line.me"
    messaging_access_token: Annotated[str, Field(description="the Messaging API channel access token of the DSD Official Account (empty: no welcome message)")] = ""
    messaging_base_url: Annotated[str, Field(pattern=r"^https?://", description='Messaging API host: "https://api.line.me" (or the sandbox\'s URL)')] = "https://api.line.me"
    oa_basic_id: Annotated[str, Field(description='the Official Account\'s basic ID, e.g. "@dsdthailand", for the add-friend link')] = ""
    http_timeout_seconds: Annotated[float, Field(gt=0, le=30, description="timeout for each call to LINE, seconds (0 to 30)")] = 5.0


class RadiusClientConfig(Section):
    address: Annotated[ipaddress.IPv4Address, Field(description="the NAS (hostapd) source address")]
    secret: Annotated[str, Field(min_length=8, description="the shared secret for this NAS, at least 8 characters")]
    name: Annotated[str, Field(description="a label for this NAS")] = "hostapd"


class RadiusConfig(Section):
    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data):
        if isinstance(data, dict) and "idle_timeout_seconds" in data:
            raise ValueError("radius.idle_timeout_seconds was removed; fix: delete it and set portal.idle_seconds, "
                             "the one idle setting (it drives the kernel's idle set and the RADIUS Idle-Timeout)")
        return data

    listen_address: Annotated[ipaddress.IPv4Address, Field(description='address the RADIUS server binds, e.g. "127.0.0.1"')] = ipaddress.IPv4Address("127.0.0.1")
    auth_port: Annotated[int, Field(ge=1, le=65535, description="authentication port, usually 1812")] = 1812
    acct_port: Annotated[int, Field(ge=1, le=65535, description="accounting port, usually 1813")] = 1813
    clients: Annotated[list[RadiusClientConfig], Field(description="the NASes allowed to talk to us, each with its own secret")] = []
    require_message_authenticator: Annotated[bool, Field(description="refuse Access-Requests without Message-Authenticator (hostapd always sends it)")] = True
    interim_interval_seconds: Annotated[int, Field(ge=60, le=86400, description="accounting interim interval, seconds (hostapd ignores under 60)")] = 300
    block_list: Annotated[list[Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2}[:-]?){5}[0-9A-Fa-f]{2}$")]],
                          Field(description='MACs refused at association, e.g. ["aa:bb:cc:dd:ee:ff"]')] = []
    das_address: Annotated[ipaddress.IPv4Address, Field(description="hostapd's Disconnect (DAS) address")] = ipaddress.IPv4Address("127.0.0.1")
    das_port: Annotated[int, Field(ge=1, le=65535, description="hostapd's radius_das_port")] = 3799
    das_secret: Annotated[str, Field(description="the DAS shared secret (empty: Disconnect is not used)")] = ""
    session_timeout_seconds: Annotated[int, Field(ge=60, le=7 * 86400, description="Session-Timeout sent in Access-Accept: hostapd disconnects the station after this many seconds (60 to 604800)")] = 4 * 3600
    das_timeout_seconds: Annotated[float, Field(gt=0, le=30, description="how long to wait for hostapd's Disconnect-ACK/NAK, seconds")] = 3.0
    durable_sync: Annotated[bool, Field(description="fsync every accounting commit before answering (SQLite synchronous=FULL): an answered record survives power loss")] = True


class HostapdConfig(Section):
    interface: Annotated[str, Field(pattern=IFNAME, description='the radio interface hostapd serves, e.g. "wlan0"')] = "wlan0"
    driver: Annotated[Literal["nl80211", "wired"], Field(description='"nl80211" for a radio, "wired" for tests on a veth')] = "nl80211"
    ssid: Annotated[str, Field(min_length=1, max_length=32, description="the open network's name, 1 to 32 bytes")] = "DSD Free WiFi"
    country_code: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description='two-letter country code, "TH"')] = "TH"
    channel: Annotated[int, Field(ge=1, le=13, description="2.4 GHz channel 1 to 13")] = 6
    nas_identifier: Annotated[str, Field(min_length=1, max_length=48, description="NAS-Identifier hostapd sends (unique per BSS)")] = "skillspot"
    own_ip_addr: Annotated[ipaddress.IPv4Address, Field(description="hostapd's own address towards the RADIUS server (NAS-IP-Address); must be one of radius.clients")] = ipaddress.IPv4Address("127.0.0.1")
    ctrl_interface: Annotated[str, Field(description="hostapd's control socket directory (empty: none)")] = "/run/hostapd"


class GateConfig(Section):
    socket: Annotated[Path, Field(description='the gate\'s Unix socket, e.g. "/run/skillspot/gate.sock"')] = Path("/run/skillspot/gate.sock")
    socket_group: Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_-]{0,31})?$", description='the group whose members may use the gate (the portal, RADIUS, the lease hook), e.g. "skillspot-gate"; empty: the gate\'s own group')] = "skillspot-gate"
    socket_mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$", description='the socket\'s file mode in octal, e.g. "0660" (never world-writable: anyone who can write it can let devices in)')] = "0660"
    sweep_seconds: Annotated[int, Field(ge=1, le=300, description="how often the gate writes the logout rows of sessions the kernel ended (timeout, idle) and reconciles, seconds, 1 to 300")] = 10
    timeout_seconds: Annotated[float, Field(gt=0, le=30, description="how long a client waits for the gate's answer, seconds")] = 5.0

    @model_validator(mode="after")
    def _not_world_writable(self) -> "GateConfig":
        if int(self.socket_mode, 8) & 0o002:
            raise ValueError(f"socket_mode {self.socket_mode} lets anyone on the box let devices in; fix: use \"0660\"")
        return self


class LedgerConfig(Section):
    retention_days: Annotated[int, Field(ge=90, le=730, description="how long traffic data is kept, days; the law's floor is 90, the cap 730")] = 90
    disk_alert_percent: Annotated[int, Field(ge=50, le=99, description="alert when the data disk is this full, percent")] = 90
    housekeeping_seconds: Annotated[int, Field(ge=5, le=3600, description="how often the flow logger samples the clock, compacts flows, seals and checks the disk, seconds")] = 60
    netlink_rcvbuf_bytes: Annotated[int, Field(ge=1 << 20, le=1 << 30, description="the flow logger's netlink receive buffer, bytes (1 MiB to 1 GiB)")] = 64 << 20
    nat_flows_only: Annotated[bool, Field(description="log only flows that were translated (masqueraded); false also logs flows to the box itself")] = True


class CentralConfig(Section):
    url: Annotated[str, Field(pattern=r"^(https?://\S+)?$", description='the DSD central API base URL, e.g. "https://centre.dsd.go.th" (empty: no sync)')] = ""
    enrol_code: Annotated[str, Field(description="the one-time enrolment code a central admin made for this box (used once, by `skillspot sync`)")] = ""
    key_file: Annotated[Path | None, Field(description="the box's Ed25519 sync key (made on first use); default: data_dir/sync_ed25519.pem")] = None
    ca_file: Annotated[Path | None, Field(description="CA bundle to trust for the centre's HTTPS certificate (default: the system's)")] = None
    batch_rows: Annotated[int, Field(ge=100, le=500_000, description="largest batch, rows")] = 50_000
    batch_seconds: Annotated[int, Field(ge=1, le=3600, description="send a smaller batch once its oldest row is this old, seconds")] = 30
    heartbeat_seconds: Annotated[int, Field(ge=5, le=3600, description="how often the box reports version, health and lag, seconds")] = 60
    backoff_max_seconds: Annotated[int, Field(ge=5, le=3600, description="longest wait between retries when the centre is unreachable, seconds")] = 300
    timeout_seconds: Annotated[int, Field(ge=2, le=600, description="HTTP timeout towards the centre, seconds")] = 60
    max_lag_seconds: Annotated[int, Field(ge=60, le=30 * 86400, description="`skillspot health` fails when the oldest ledger row the centre has not acknowledged is older than this, seconds (default 3600: an hour offline)")] = 3600


class Config(Section):
    """The whole file."""

    box: BoxConfig
    network: NetworkConfig
    portal: PortalConfig
    line: LineConfig
    admin: AdminConfig = AdminConfig()
    radius: RadiusConfig = RadiusConfig()
    hostapd: HostapdConfig = HostapdConfig()
    ledger: LedgerConfig = LedgerConfig()
    gate: GateConfig = GateConfig()
    central: CentralConfig = CentralConfig()

    @model_validator(mode="after")
    def _admin_not_on_the_visitor_lan(self) -> "Config":
        visitors = self.network.lan_address.network
        for net in self.admin.networks:
            if net.overlaps(visitors):
                raise ValueError(f"admin.networks contains {net}, which overlaps the visitor LAN {visitors}: anyone "
                                 "on the open WiFi could reach the admin login; fix: list only management "
                                 "networks, or leave it empty (the box itself only, e.g. over ssh -L)")
        return self

    @property
    def ledger_path(self) -> Path:
        """Where the SQLite ledger lives."""
        return self.box.data_dir / "ledger.sqlite"

    @property
    def sessions_lock_path(self) -> Path:
        """The admission lock every process that lets devices in or out shares (sessions/)."""
        return self.box.data_dir / "sessions.lock"


def _field_hint(model: type[BaseModel], loc: tuple) -> str:
    """Walk the model along an error location and return that field's description."""
    current: type[BaseModel] | None = model
    hint = ""
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            continue
        field = current.model_fields[part]
        hint = field.description or hint
        ann = field.annotation
        nested = getattr(ann, "__args__", None)
        candidates = [ann, *(nested or [])]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return hint


def format_errors(source: str, err: ValidationError) -> str:
    """Turn pydantic's errors into lines naming key, bad value and fix."""
    lines = [f"{source}: {err.error_count()} problem(s) in the configuration:"]
    for e in err.errors(include_url=False):
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            lines.append(f"  [{key}] is missing. Fix: add it: {_field_hint(Config, e['loc'])}")
            continue
        if e["type"] == "extra_forbidden":
            lines.append(f"  [{key}] is not a known key. Fix: remove it or check its spelling and section")
            continue
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "(a table)"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        hint = _field_hint(Config, e["loc"])
        fix = msg if "fix:" in msg else f"{msg}. Fix: {hint or 'see examples/skillspot.toml'}"
        lines.append(f"  [{key}] = {shown}: {fix}")
    return "\n".join(lines)


def parse_config(data: dict, source: str = "config") -> Config:
    """Validate an already-parsed TOML document."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(source, err)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML file at `path`; raises ConfigError with a readable message."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}. "
                          "Fix: pass the right path with --config or SKILLSPOT_CONFIG") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Fix: save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix: correct the syntax at that line "
                          "(strings need quotes, tables look like [section])") from None
    return parse_config(data, str(path))


# -- secrets: placeholders and weak values ------------------------------------------------

# The override for the demo and the tests, whose configs carry public, made-up secrets. Never
# set it on a real box: with it, anyone who has read the example can forge portal sessions
# (portal.secret_key) or talk RADIUS to the box (radius.clients secret).
ALLOW_EXAMPLE_SECRETS_ENV = "SKILLSPOT_ALLOW_EXAMPLE_SECRETS"

# The secret values of examples/skillspot.toml, and words that mark a value as not yet chosen.
EXAMPLE_SECRETS = frozenset({
    "change-me-to-32-or-more-random-characters!!",
    "0123456789abcdef0123456789abcdef",
    "radius-secret-change-me",
    "das-secret-change-me",
})
PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "placeholder", "example", "demo-only", "0123456789")
RADIUS_SECRET_MIN = 16  # RFC 2865 s.3 asks for at least 16 octets


@dataclass(frozen=True)
class SecretProblem:
    """One weak secret: its key, whether it is a published placeholder, and what to do."""

    key: str
    placeholder: bool
    message: str


def _secrets(cfg: Config) -> list[tuple[str, str, int]]:
    """(key, value, recommended minimum length) for every secret in the configuration."""
    found = [("portal.secret_key", cfg.portal.secret_key, 32),
             ("line.channel_secret", cfg.line.channel_secret, 32)]
    if cfg.line.messaging_access_token:
        found.append(("line.messaging_access_token", cfg.line.messaging_access_token, 32))
    if cfg.radius.das_secret:
        found.append(("radius.das_secret", cfg.radius.das_secret, RADIUS_SECRET_MIN))
    for i, client in enumerate(cfg.radius.clients):
        found.append((f"radius.clients[{i}].secret", client.secret, RADIUS_SECRET_MIN))
    return found


def secret_problems(cfg: Config) -> list[SecretProblem]:
    """Secrets that are the example's placeholders, look made up, or are short."""
    problems = []
    for key, value, minimum in _secrets(cfg):
        lowered = value.lower()
        if value in EXAMPLE_SECRETS or any(word in lowered for word in PLACEHOLDER_WORDS):
            fix = ("copy the channel secret from the LINE Developers console" if key == "line.channel_secret"
                   else "replace it with your own, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
            problems.append(SecretProblem(key, True, f"[{key}] is a placeholder (a value published in the "
                                          f"example or marked as one). Fix: {fix}"))
        elif len(value) < minimum:
            problems.append(SecretProblem(key, False, f"[{key}] is only {len(value)} characters. Fix: use at least "
                                          f"{minimum} random characters"))
        elif len(set(value)) < 8:
            problems.append(SecretProblem(key, False, f"[{key}] uses only {len(set(value))} different characters: "
                                          "easy to guess. Fix: use random characters"))
    return problems


def refuse_placeholder_secrets(cfg: Config, service: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError if a secret is a published placeholder, unless the demo/test override
    (SKILLSPOT_ALLOW_EXAMPLE_SECRETS=1) is set in the environment."""
    env = os.environ if environ is None else environ
    if env.get(ALLOW_EXAMPLE_SECRETS_ENV) == "1":
        return
    bad = [p for p in secret_problems(cfg) if p.placeholder]
    if bad:
        lines = [f"skillspot {service} will not start: the configuration still has placeholder secrets "
                 "that anyone who has read the example knows:"]
        lines += [f"  {p.message}" for p in bad]
        lines.append(f"  (The demo and the tests set {ALLOW_EXAMPLE_SECRETS_ENV}=1 to run with made-up secrets; "
                     "never on a real box.)")
        raise ConfigError("\n".join(lines))
