"""Rendering hostapd.conf for the open SSID from the [hostapd] and [radius] sections."""
from __future__ import annotations

import ipaddress
import sys
import re

import jinja2

from base.config import HostapdConfig, RadiusConfig

# One hostapd.conf line is KEY=VALUE up to the newline: a value with a control character
# could smuggle in another key.
_SAFE_VALUE = re.compile(r"^[^\x00-\x1f\x7f]*$")
_KEY = re.compile(r"^[a-z0-9_]+$")

_env = jinja2.Environment(loader=jinja2.PackageLoader("provisioning", "templates"), autoescape=False,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True)


def _check(name: str, value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise ValueError(f"{name} contains a control character (newline?); fix: remove it from the config")
    return value


def render_hostapd_conf(hostapd: HostapdConfig, radius: RadiusConfig, *, extra: dict[str, str] | None = None) -> str:
    """hostapd.conf text for hostapd 2.10+; ValueError names the config key to fix.

    `extra` appends KEY=VALUE lines (tests add ieee8021x/eap_server for a wired station)."""
    ssid = hostapd.ssid.encode("utf-8")
    if len(ssid) > 32:
        raise ValueError(f"hostapd.ssid is {len(ssid)} bytes in UTF-8 (Thai letters take 3); fix: at most 32 bytes")
    client = next((c for c in radius.clients if c.address == hostapd.own_ip_addr), None)
    if client is None:
        raise ValueError(f"no [[radius.clients]] entry has address {hostapd.own_ip_addr} (hostapd.own_ip_addr); "
                         "fix: add one, with the secret hostapd should use")
    server = radius.listen_address
    if server == ipaddress.IPv4Address("0.0.0.0"):
        server = hostapd.own_ip_addr  # listening everywhere: reach it on hostapd's own address
    if radius.das_secret and len(radius.das_secret) < 8:
        raise ValueError("radius.das_secret is shorter than 8 characters; fix: use a long random secret")
    for key, value in (("radius.clients secret", client.secret), ("radius.das_secret", radius.das_secret),
                       ("hostapd.nas_identifier", hostapd.nas_identifier),
                       ("hostapd.ctrl_interface", hostapd.ctrl_interface)):
        _check(key, value)
    if any(ch.isspace() for ch in radius.das_secret):
        raise ValueError("radius.das_secret contains a space; fix: hostapd reads it up to the first space")
    items = []
    for key, value in (extra or {}).items():
        if not _KEY.match(key):
            raise ValueError(f"extra hostapd key {key!r} is not a hostapd key name")
        items.append((key, _check(key, str(value))))
    return _env.get_template("hostapd.conf.j2").render(
        h=hostapd, r=radius, ssid_hex=ssid.hex(), server=server, secret=client.secret,
        das_client=server, extra=items)


class HostapdCheckError(Exception):
    """hostapd refused a rendered file; the message carries hostapd's own words."""


# hostapd prints one of these once the whole file is parsed and it starts on the interface
# (with country_code set it first waits up to 5 s for a regulatory update: no need to wait).
_STARTED = ("AP-ENABLED", "state UNINITIALIZED->ENABLED", "state UNINITIALIZED->COUNTRY_UPDATE")


def check_hostapd_conf(path: str, timeout: float = 15.0) -> str:
    """Start the installed hostapd on a copy of `path` inside a scratch network namespace and
    return its version line; HostapdCheckError with hostapd's message if it refuses the file.

    hostapd has no check mode and refuses a whole file with a key it does not know, so the only
    honest check is a start. The copy runs on a fresh veth pair with driver=wired (no radio is
    needed: every key is still parsed by this hostapd version) and no control socket, in its own
    namespace, so it touches neither the real LAN nor ports the real services use; the namespace
    goes away with the process."""
    import os
    import select
    import shutil
    import subprocess
    import tempfile
    import time

    if shutil.which("hostapd") is None or shutil.which("unshare") is None:
        raise HostapdCheckError("hostapd or unshare is not installed; fix: apt-get install hostapd util-linux")
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    # Only the three keys that tie the file to this machine are replaced; everything else,
    # including any key this hostapd might not know, is kept for hostapd to judge.
    replaced = {"interface": "hck0", "driver": "wired", "ctrl_interface": None}
    body = [ln for ln in lines if ln.split("=", 1)[0].strip() not in replaced]
    body += [f"{k}={v}" for k, v in replaced.items() if v]
    with tempfile.TemporaryDirectory(prefix="hostapd-check-") as tmp:
        conf = os.path.join(tmp, "hostapd.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write("\n".join(body) + "\n")
        script = ("ip link add hck0 type veth peer name hck1 && ip link set hck1 up && "
                  f"ip link set hck0 up && exec stdbuf -oL hostapd {conf}")
        proc = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        out: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            buf = b""
            while time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
                chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
                buf += chunk
                text = buf.decode(errors="replace")
                if any(marker in text for marker in _STARTED):
                    return _hostapd_version()
                if ready and not chunk:  # EOF: hostapd exited
                    proc.wait(timeout=5)
                    break
            out = [ln for ln in buf.decode(errors="replace").splitlines() if ln.strip()]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
        detail = "; ".join(out[-6:]) or f"no output within {timeout:.0f} s"
        raise HostapdCheckError(f"hostapd {_hostapd_version()} refused {path}: {detail}")


def _hostapd_version() -> str:
    import subprocess
    proc = subprocess.run(["hostapd", "-v"], capture_output=True, text=True)
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return text[0] if text else "(unknown version)"


def main(argv: list[str]) -> int:
    """`python -m provisioning.hostapd check FILE`: the check Ansible's validate: runs."""
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m provisioning.hostapd check FILE", file=sys.stderr)
        return 2
    try:
        version = check_hostapd_conf(argv[1])
    except (HostapdCheckError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{argv[1]}: OK ({version} started on it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
