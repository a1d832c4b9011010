"""Operating-system connectivity probes and the "online" answer each one expects.

Every OS fetches a known plain-HTTP URL after joining a network. Before login the portal
answers every foreign request, probes included, with a 302 to itself (captive.py); that is
what makes the OS open its sign-in sheet. After login the kernel lets the device reach the real
host. A probe that still lands here from an authorised device (a connection opened before the
gate changed, a cached keep-alive connection) gets exactly the answer the real host would give,
from this table, so the OS flips to "online" instead of reopening the sheet.

Sources: /work/shared/reference/captive-clients.md (AOSP NetworkMonitor, Apple, Microsoft NCSI,
Firefox captivedetect prefs, NetworkManager distro configs).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Probe:
    """One OS probe: which hosts and paths it fetches, and the answer that means "online".

    `paths` holds exact paths; "*" matches any path on those hosts (Apple accepts any page of
    captive.apple.com). `user_agent` is a real probe User-Agent, for tests and for operators
    reading access logs.
    """

    client: str
    hosts: tuple[str, ...]
    paths: tuple[str, ...]
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    user_agent: str = ""


APPLE_SUCCESS = b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
# AOSP NetworkMonitor's probe UA: a fixed desktop Chrome on Linux, not an Android one.
ANDROID_PROBE_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/60.0.3112.32 Safari/537.36")
FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
# Firefox's captivedetect.canonicalContent, byte for byte.
FIREFOX_CANONICAL = b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'

PROBES: tuple[Probe, ...] = (
    # Older iOS picked a random path on these hosts, hence "*"; nobody browses them for content.
    Probe("apple", ("captive.apple.com", "www.appleiphonecell.com", "www.ibook.info",
                    "www.itools.info", "www.airport.us", "www.thinkdifferent.us"),
          ("*",), 200, APPLE_SUCCESS, "text/html",
          user_agent="CaptiveNetworkSupport-481.0.1 wispr"),
    Probe("apple-legacy", ("www.apple.com",), ("/library/test/success.html",), 200, APPLE_SUCCESS, "text/html",
          user_agent="CaptiveNetworkSupport-481.0.1 wispr"),
    Probe("android", ("connectivitycheck.gstatic.com", "www.google.com", "play.googleapis.com",
                      "clients3.google.com", "clients1.google.com", "www.gstatic.com",
                      "connectivitycheck.android.com", "www.androidbak.net"),
          ("/generate_204", "/gen_204"), 204, user_agent=ANDROID_PROBE_UA),
    Probe("xiaomi", ("connect.rom.miui.com",), ("/generate_204",), 204, user_agent=ANDROID_PROBE_UA),
    Probe("oppo", ("conn1.oppomobile.com", "conn2.oppomobile.com"), ("/generate_204",), 204,
          user_agent=ANDROID_PROBE_UA),
    Probe("vivo", ("wifi.vivo.com.cn", "wf.vivo.com.cn"), ("/generate_204",), 204, user_agent=ANDROID_PROBE_UA),
    Probe("huawei", ("connectivitycheck.platform.hicloud.com", "connectivitycheck.platform.hihonorcloud.com"),
          ("/generate_204",), 204, user_agent=ANDROID_PROBE_UA),
    Probe("samsung-cn", ("connectivity.samsung.com.cn",), ("/generate_204",), 204, user_agent=ANDROID_PROBE_UA),
    Probe("windows", ("www.msftconnecttest.com", "ipv6.msftconnecttest.com"), ("/connecttest.txt",), 200,
          b"Microsoft Connect Test", "text/plain", user_agent="Microsoft NCSI"),
    Probe("windows-legacy", ("www.msftncsi.com",), ("/ncsi.txt",), 200, b"Microsoft NCSI", "text/plain",
          user_agent="Microsoft NCSI"),
    Probe("firefox-portal", ("detectportal.firefox.com",), ("/canonical.html",), 200, FIREFOX_CANONICAL + b"\n",
          "text/html", user_agent=FIREFOX_UA),
    Probe("firefox", ("detectportal.firefox.com",), ("/success.txt",), 200, b"success\n", "text/plain",
          user_agent=FIREFOX_UA),
    Probe("networkmanager-ubuntu", ("connectivity-check.ubuntu.com",), ("/", ""), 204,
          headers=(("X-NetworkManager-Status", "online"),), user_agent="NetworkManager/1.46.0"),
    Probe("networkmanager", ("nmcheck.gnome.org", "ping.archlinux.org", "network-test.debian.org"),
          ("/check_network_status.txt", "/nm-check.txt", "/nm"), 200, b"NetworkManager is online\n", "text/plain",
          headers=(("X-NetworkManager-Status", "online"),), user_agent="NetworkManager/1.46.0"),
    Probe("fedora", ("fedoraproject.org",), ("/static/hotspot.txt",), 200, b"OK", "text/plain",
          user_agent="NetworkManager/1.46.0"),
)


def _host_only(host: str) -> str:
    """'Host: Example.COM:80' -> 'example.com' (IPv6 brackets kept off)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def find_probe(host: str, path: str) -> Probe | None:
    """The probe a request for `host` and `path` is, or None when it is not a known probe."""
    name = _host_only(host)
    for probe in PROBES:
        if name in probe.hosts and ("*" in probe.paths or path in probe.paths):
            return probe
    return None
