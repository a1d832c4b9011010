"""What the simulated phone does, run inside its namespace: `python -m simoffice.phone ACTION ...`.

Each action prints one JSON object. DHCP is done with scapy (a real DHCP exchange on the
wire, DISCOVER/OFFER/REQUEST/ACK) and the address is configured with pyroute2; HTTP is a real
client (requests) resolving names through the DNS server DHCP gave us.
"""
from __future__ import annotations

import json
import random
import socket
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urljoin

PHONE_HOSTNAME = "demo-phone"


def dhcp(iface: str, timeout: float = 5.0, tries: int = 4) -> dict:
    """Lease an address on `iface`, configure it and the default route; return the lease."""
    from pyroute2 import IPRoute
    from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr, mac2str, srp1

    conf.checkIPaddr = False  # the OFFER comes from the server's address, not the broadcast we sent
    conf.verb = 0
    mac = get_if_hwaddr(iface)
    xid = random.getrandbits(32)

    def exchange(options: list) -> dict | None:
        pkt = (Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / IP(src="0.0.0.0", dst="255.255.255.255")
               / UDP(sport=68, dport=67) / BOOTP(chaddr=mac2str(mac), xid=xid, flags=0x8000)
               / DHCP(options=options + ["end"]))
        for _ in range(tries):
            # BOOTP.answers() matches replies on xid, so the OFFER/ACK for this exchange is taken.
            answer = srp1(pkt, iface=iface, timeout=timeout, verbose=0)
            if answer is not None and DHCP in answer:
                opts = {o[0]: o[1:] if len(o) > 2 else o[1] for o in answer[DHCP].options if isinstance(o, tuple)}
                return {"yiaddr": answer[BOOTP].yiaddr, "options": opts}
        return None

    wanted = [("param_req_list", [1, 3, 6, 51, 114]), ("hostname", PHONE_HOSTNAME.encode())]
    offer = exchange([("message-type", "discover"), *wanted])
    if offer is None:
        raise SystemExit("no DHCP OFFER")
    server = offer["options"]["server_id"]
    ack = exchange([("message-type", "request"), ("requested_addr", offer["yiaddr"]), ("server_id", server), *wanted])
    if ack is None or ack["options"].get("message-type") != 5:
        raise SystemExit(f"no DHCP ACK: {ack}")
    opts = ack["options"]
    mask = opts.get("subnet_mask", "255.255.255.0")
    prefixlen = sum(bin(int(x)).count("1") for x in mask.split("."))
    router = opts["router"] if isinstance(opts["router"], str) else opts["router"][0]
    dns = opts["name_server"] if isinstance(opts["name_server"], str) else opts["name_server"][0]
    from pyroute2 import NetlinkError
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=iface)[0]
        for op in (lambda: ipr.addr("add", index=idx, address=ack["yiaddr"], prefixlen=prefixlen),
                   lambda: ipr.route("add", dst="0.0.0.0/0", gateway=router)):
            try:
                op()
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST: a renewal of the lease we already hold
                    raise
    captive = opts.get("captive-portal")
    return {"mac": mac, "ip": ack["yiaddr"], "prefixlen": prefixlen, "router": router, "dns": dns,
            "lease_seconds": opts.get("lease_time"), "server": server,
            "captive_api": captive.decode() if isinstance(captive, bytes) else captive}


def tcp(host: str, port: int, timeout: float = 3.0) -> dict:
    """Try a TCP connection; how it ended and how long it took."""
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        result = "connected"
    except ConnectionRefusedError:
        result = "refused"
    except socket.timeout:
        result = "timeout"
    except OSError as exc:
        result = f"error: {exc.strerror or exc}"
    return {"result": result, "seconds": round(time.monotonic() - start, 3)}


def get(url: str, follow: bool = False, user_agent: str | None = None) -> dict:
    """One HTTP GET, as a browser (or an OS probe, with its User-Agent) would send it."""
    import requests
    headers = {"User-Agent": user_agent} if user_agent else {}
    try:
        r = requests.get(url, allow_redirects=follow, timeout=10, headers=headers)
    except requests.RequestException as exc:
        return {"error": type(exc).__name__, "detail": str(exc)[:300]}
    return {"status": r.status_code, "location": r.headers.get("Location"), "url": r.url, "body": r.text[:500],
            "content_type": r.headers.get("Content-Type"), "cache_control": r.headers.get("Cache-Control")}


def download(url: str) -> dict:
    """Fetch `url` whole; how many bytes arrived and how long it took (for bandwidth caps)."""
    import requests
    start = time.monotonic()
    got = 0
    with requests.get(url, stream=True, timeout=30) as r:
        for chunk in r.iter_content(65536):
            got += len(chunk)
    return {"status": r.status_code, "bytes": got, "seconds": round(time.monotonic() - start, 3)}


class FormParser(HTMLParser):
    """The first <form> of a page: its action, method and the fields a browser would send."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self.options: dict[str, list[str]] = {}
        self.checkboxes: dict[str, str] = {}
        self._select: str | None = None
        self._done = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if self._done:
            return
        if tag == "form" and self.action is None:
            self.action, self.method = a.get("action") or "", (a.get("method") or "get").lower()
        elif tag == "input" and a.get("name") and a.get("type", "text") in ("hidden", "text"):
            self.fields[a["name"]] = a.get("value") or ""
        elif tag == "input" and a.get("name") and a.get("type") == "checkbox":
            self.checkboxes[a["name"]] = a.get("value") or "on"
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select:
            self.options.setdefault(self._select, []).append(a.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "form" and self.action is not None:
            self._done = True


def login(portal_url: str, user_index: int = 0, add_friend: bool = True, cancel: bool = False,
          user_agent: str | None = None) -> dict:
    """The visitor's whole path: splash, Login with LINE, the sandbox's login page, back to the portal."""
    import requests
    s = requests.Session()
    if user_agent:
        s.headers["User-Agent"] = user_agent
    steps = []
    splash = s.get(portal_url + "/?lang=en", timeout=10)
    steps.append({"splash": splash.status_code, "has_line_button": "Login with LINE" in splash.text})
    terms = FormParser()
    terms.feed(splash.text)
    if terms.action is None or "terms" not in terms.checkboxes:
        return {"ok": False, "steps": steps, "error": "no terms form on the splash page"}
    # The visitor ticks the terms box; the optional OA-messages box only when they want news.
    chosen = {**terms.fields, "terms": terms.checkboxes["terms"]}
    if add_friend and "oa_messages" in terms.checkboxes:
        chosen["oa_messages"] = terms.checkboxes["oa_messages"]
    page = s.get(urljoin(splash.url, terms.action), params=chosen, timeout=10)  # follows to LINE's authorize page
    steps.append({"authorize": page.url.split("?")[0], "status": page.status_code})
    form = FormParser()
    form.feed(page.text)
    if form.action is None:
        return {"ok": False, "steps": steps, "error": "no login form on the LINE page"}
    data = dict(form.fields)
    users = form.options.get("sandbox_user", [])
    if users:
        data["sandbox_user"] = users[user_index]
    data["sandbox_action"] = "cancel" if cancel else "allow"
    if add_friend:
        data["sandbox_add_friend"] = "1"
    done = s.post(urljoin(page.url, form.action), data=data, timeout=20)
    steps.append({"callback": [r.url.split("?")[0] for r in done.history], "final": done.url, "status": done.status_code})
    return {"ok": done.status_code == 200 and 'id="online"' in done.text, "steps": steps,
            "final_url": done.url, "status": done.status_code,
            "body": done.text[done.text.find("<main>"):][:1500],  # the content, not the inline style
            "user": data.get("sandbox_user")}


def timed_logins(portal_url: str, count: int, host: str, port: int, deadline_s: float = 5.0) -> dict:
    """`count` logins in a row, each timed from the LINE callback reaching the portal to the
    phone's first TCP connect through the box to host:port; the visitor logs out after each
    (the welcome page's form), so every login lets a held device in. For bench/login_scale.py."""
    import functools
    import re

    import requests
    # A phone's resolver caches answers; without a cache every login here would spend the
    # box's DNS budget for devices not logged in (a burst, then 2 queries/s) and time DNS
    # waits instead of the login.
    socket.getaddrinfo = functools.lru_cache(maxsize=64)(socket.getaddrinfo)
    times_ms, failures = [], []
    for i in range(count):
        s = requests.Session()
        splash = s.get(portal_url + "/?lang=en", timeout=10)
        terms = FormParser()
        terms.feed(splash.text)
        page = s.get(urljoin(splash.url, terms.action), params={**terms.fields, "terms": terms.checkboxes["terms"]},
                     timeout=10)
        form = FormParser()
        form.feed(page.text)
        data = {**form.fields, "sandbox_action": "allow"}
        users = form.options.get("sandbox_user", [])
        if users:
            data["sandbox_user"] = users[0]
        to_portal = s.post(urljoin(page.url, form.action), data=data, timeout=20, allow_redirects=False)
        callback = to_portal.headers.get("Location", "")
        start = time.perf_counter()
        done = s.get(callback, timeout=20, allow_redirects=False)
        connected = False
        while not connected and time.perf_counter() - start < deadline_s:
            try:
                socket.create_connection((host, port), timeout=1).close()
                connected = True
            except OSError:
                time.sleep(0.001)
        elapsed = (time.perf_counter() - start) * 1000
        if done.status_code != 303 or not connected:
            failures.append({"i": i, "callback_status": done.status_code, "connected": connected})
        else:
            times_ms.append(round(elapsed, 2))
        welcome = s.get(urljoin(portal_url, "/welcome"), timeout=10)
        token = re.search(r'name="token" value="([^"]+)"', welcome.text)
        if token:
            s.post(urljoin(portal_url, "/logout"), data={"token": token.group(1)}, timeout=10)
        s.close()
    return {"ok": not failures, "ms": times_ms, "failures": failures[:10]}


def main(argv: list[str]) -> None:
    action, args = argv[0], argv[1:]
    if action == "dhcp":
        result = dhcp(args[0])
    elif action == "tcp":
        result = tcp(args[0], int(args[1]))
    elif action == "get":
        ua = next((a.split("=", 1)[1] for a in args if a.startswith("--ua=")), None)
        result = get(args[0], follow="--follow" in args, user_agent=ua)
    elif action == "download":
        result = download(args[0])
    elif action == "login":
        positional = [a for a in args if not a.startswith("--")]
        result = login(args[0], user_index=int(positional[1]) if len(positional) > 1 else 0,
                       add_friend="--no-friend" not in args, cancel="--cancel" in args,
                       user_agent=next((a.split("=", 1)[1] for a in args if a.startswith("--ua=")), None))
    elif action == "timed-logins":
        result = timed_logins(args[0], int(args[1]), args[2], int(args[3]))
    else:
        raise SystemExit(f"unknown phone action {action!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
