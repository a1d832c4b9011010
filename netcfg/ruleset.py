"""The box's nftables ruleset, rendered from the configuration.

One table, `inet skillspot`, holds everything, so applying it is one atomic `nft -f`
transaction that never leaves the box half-open, and deleting the table undoes it all.
"""
from __future__ import annotations

from dataclasses import dataclass

from base.config import NetworkConfig, PortalConfig

TABLE = "skillspot"
FAMILY = "inet"
AUTHORISED_SET = "authorised"          # ether_addr . ipv4_addr, one element per device and address
AUTHORISED_MAC6_SET = "authorised_mac6"  # ether_addr: lets an authorised device's IPv6 through
ACTIVE_SET = "active"                  # ether_addr . ipv4_addr, refreshed by traffic: the idle limit
ACTIVE_MAC6_SET = "active_mac6"        # ether_addr, refreshed by a device's IPv6 traffic: the same limit
RECENT_SET = "recent"                  # ether_addr . ipv4_addr, checked moments ago: the forwarding fast path
UP_METER = "up_meter"                  # per-device rate state (bandwidth cap), kept by the kernel
DOWN_METER = "down_meter"
WALLED_GARDEN4_SET = "walled_garden4"  # filled by dnsmasq (nftset=) from DNS answers
WALLED_GARDEN6_SET = "walled_garden6"
WALLED_GARDEN_TTL = "1h"
DNS_METER = "dns_meter"                # per-device DNS query budget of devices not let in
# A conntrack mark bit on DNS exchanges of devices not let in, so the output hook can hold
# their answers to the same size limit (the output hook cannot see the device's MAC).
DNS_UNAUTH_MARK = 0x10
DNS_MAX_QUERY_BYTES = 512              # DNS payload; every stub resolver's query fits
DNS_MAX_ANSWER_BYTES = 512             # classic DNS over UDP; what a portal visit resolves fits
# Without an explicit size the kernel caps a set at 65,535 elements and the next login fails
# ("Too many open files in system"). Elements are allocated as they are added, so a large cap
# costs nothing until it is used.
SET_SIZE = 1_048_576
WALLED_GARDEN_SET_SIZE = 65_536  # addresses of the LINE login hosts, not devices
# How often the kernel sweeps a per-device set for elements past their timeout. Its default is
# every second, walking the whole set: with 100,000 devices in the three big sets that kept
# 1.6 % of a core busy on an idle box, and the walk pushes the forwarding path out of the
# CPU caches. An element past its timeout already matches nothing, is never listed, and can be
# added or refreshed again at once (the kernel checks the time on every look-up), so a rarer
# sweep only keeps its memory a little longer.
SET_GC_INTERVAL = "60s"
# Longest a forwarded packet may ride on an earlier check (see the `recent` set); it is also the
# longest a device's `active` element goes without a refresh while the device is sending.
RECENT_MAX_MS = 10_000


def recent_window_ms(idle_seconds: int) -> int:
    """How long one full check of a device lets its next packets through on a single lookup:
    a tenth of the idle limit, at most RECENT_MAX_MS, so the idle element is refreshed many
    times before it could run out while the device is sending."""
    return max(100, min(RECENT_MAX_MS, idle_seconds * 100))


@dataclass(frozen=True)
class RulesetParams:
    """Just what the ruleset depends on, so tests can render one without a whole config."""

    lan: str
    wan: str
    lan_ip: str
    http_port: int
    https_port: int
    walled_garden_ports: tuple[int, ...]
    idle_seconds: int = 900
    bandwidth_kbit: int = 0  # 0: no cap
    # DNS budget of a device not let in (queries per second, and the burst it starts with).
    dns_queries_per_second: int = 2
    dns_query_burst: int = 80
    # network.ipv6: "" when off (nothing IPv6 forwarded), else the advertised /64.
    ipv6_prefix: str = ""

    @classmethod
    def from_config(cls, net: NetworkConfig, portal: PortalConfig) -> "RulesetParams":
        return cls(lan=net.lan_interface, wan=net.wan_interface, lan_ip=str(net.lan_address.ip),
                   http_port=portal.http_port, https_port=portal.https_port,
                   walled_garden_ports=tuple(sorted(set(net.walled_garden_ports))),
                   idle_seconds=portal.idle_seconds, bandwidth_kbit=portal.bandwidth_kbit,
                   dns_queries_per_second=net.unauthorised_dns_queries_per_second,
                   dns_query_burst=net.unauthorised_dns_burst,
                   ipv6_prefix=str(net.ipv6_prefix) if net.ipv6 == "on" and net.ipv6_prefix else "")


def _ports(ports: tuple[int, ...] | list[int]) -> str:
    return "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"


def render_ruleset(p: RulesetParams) -> str:
    """The full ruleset as `nft -f` text. The table is flushed and rebuilt in one transaction,
    except the authorised sets, whose elements (live sessions) are re-added by the caller."""
    garden_ports = _ports(p.walled_garden_ports)
    box_ports = _ports([53, p.http_port, p.https_port])
    meters = up_cap = down_cap = metered = ""
    fast_verdict = "accept"
    if p.bandwidth_kbit:
        rate = p.bandwidth_kbit * 1000 // 8  # bytes/s; a one-second burst lets TCP ramp up without stalls
        meters = "".join(f"""
    set {name} {{
        type ipv4_addr
        size {SET_SIZE}
        flags dynamic,timeout
        gc-interval {SET_GC_INTERVAL}
        timeout 1m
    }}""" for name in (UP_METER, DOWN_METER))
        up_cap = f"\n        update @{UP_METER} {{ ip saddr limit rate over {rate} bytes/second burst {rate} bytes }} drop"
        # A device on the fast path is metered too: its packets go through the same cap.
        fast_verdict = "goto metered"
        metered = f"""

    chain metered {{{up_cap}
        accept
    }}"""
        down_cap = (f'\n        iifname "{p.wan}" oifname "{p.lan}" update @{DOWN_METER} '
                    f"{{ ip daddr limit rate over {rate} bytes/second burst {rate} bytes }} drop")
    return f"""\
# Generated by skillspot from the box configuration; do not edit by hand.
table {FAMILY} {TABLE}
delete table {FAMILY} {TABLE}
table {FAMILY} {TABLE} {{
    # Devices let through. Each element carries its own timeout, so the kernel ends a
    # session on time even when every skillspot process is down.
    set {AUTHORISED_SET} {{
        type ether_addr . ipv4_addr
        size {SET_SIZE}
        flags timeout
        gc-interval {SET_GC_INTERVAL}
    }}
    # Refreshed by every packet a let-in device sends; an element that runs out means the
    # device was idle too long, and it is treated as logged out (here and in the portal).
    set {ACTIVE_SET} {{
        type ether_addr . ipv4_addr
        size {SET_SIZE}
        flags dynamic,timeout
        gc-interval {SET_GC_INTERVAL}
        timeout {p.idle_seconds}s
    }}
    # A device fully checked (authorised and not idle) moments ago: its next packets pass on
    # this one lookup, and only the first packet after the window pays for the full check and
    # the refresh of `active`. The gate deletes a revoked device's element with the others
    # (netcfg.fastpath), so a revocation still cuts at once; a session the kernel ends by
    # timeout gets at most this window more.
    set {RECENT_SET} {{
        type ether_addr . ipv4_addr
        size {SET_SIZE}
        flags dynamic,timeout
        gc-interval {SET_GC_INTERVAL}
        timeout {recent_window_ms(p.idle_seconds)}ms
    }}
    set {AUTHORISED_MAC6_SET} {{
        type ether_addr
        size {SET_SIZE}
        flags timeout
        gc-interval {SET_GC_INTERVAL}
    }}
    # A device that talks only IPv6 refreshes this instead of `active` (its IPv4 element
    # would run out while it is busy): it is idle only when neither holds it.
    set {ACTIVE_MAC6_SET} {{
        type ether_addr
        size {SET_SIZE}
        flags dynamic,timeout
        gc-interval {SET_GC_INTERVAL}
        timeout {p.idle_seconds}s
    }}
    # The LINE login hosts, filled by dnsmasq as it resolves them: no IP list kept by hand.
    set {WALLED_GARDEN4_SET} {{
        type ipv4_addr
        size {WALLED_GARDEN_SET_SIZE}
        flags timeout
        timeout {WALLED_GARDEN_TTL}
    }}
    set {WALLED_GARDEN6_SET} {{
        type ipv6_addr
        size {WALLED_GARDEN_SET_SIZE}
        flags timeout
        timeout {WALLED_GARDEN_TTL}
    }}
    # One token bucket per MAC for DNS from devices not let in: a DNS tunnel needs many
    # queries, a portal visit a few dozen. Entries vanish a minute after a device goes quiet.
    set {DNS_METER} {{
        type ether_addr
        flags dynamic,timeout
        timeout 1m
        size {SET_SIZE}
    }}{meters}

    # Plain HTTP from a device not yet let in lands on the portal, whatever host it asked for:
    # that is what makes every OS open its captive-portal sheet.
    chain portal_redirect {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname != "{p.lan}" return
        ether saddr . ip saddr @{AUTHORISED_SET} ether saddr . ip saddr @{ACTIVE_SET} return
        ip daddr {p.lan_ip} return
        ip daddr @{WALLED_GARDEN4_SET} return
        tcp dport 80 redirect to :{p.http_port}
    }}

    chain masquerade_out {{
        type nat hook postrouting priority srcnat; policy accept;
        # IPv4 only: an IPv6 source is never translated, so the flow log and the neighbour
        # table name the device by its own address.
        oifname "{p.wan}" meta nfproto ipv4 masquerade
    }}

    # What visitors may ask of the box itself: DHCP, DNS, the portal. Nothing else.
    chain box_input {{
        type filter hook input priority filter; policy accept;
        iifname != "{p.lan}" accept
        # DNS is checked before the established shortcut: a tunnel reusing one source port
        # would otherwise be "established" after its first answer.
        meta l4proto {{ tcp, udp }} th dport 53 jump dns_guard
        ct state established,related accept
        udp dport {{ 53, 67 }} accept
        tcp dport {box_ports} accept
        icmp type {{ echo-request, destination-unreachable, time-exceeded }} accept
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, echo-request }} accept
        meta l4proto tcp reject with tcp reset
        reject with icmpx admin-prohibited
    }}

    # Every packet a visitor sends outwards is checked (no established shortcut in this
    # direction), so a revoked or expired device loses its open connections too. Ordered so the
    # common packet does the least work: a visitor's packet passes on the first rule, one lookup
    # in `recent` (no write), and only the first packet of each window does the two lookups and
    # refreshes `active` (a write on every packet cost a quarter of the small-packet rate); a
    # reply is accepted on the second rule.
    chain clients {{
        type filter hook forward priority filter; policy accept;{down_cap}
        iifname "{p.lan}" ether saddr . ip saddr @{RECENT_SET} {fast_verdict}
        meta nfproto ipv6 jump ipv6_clients
        iifname "{p.wan}" oifname "{p.lan}" ct state established,related accept
        iifname "{p.wan}" oifname "{p.lan}" drop
        iifname != "{p.lan}" accept
        ether saddr . ip saddr @{AUTHORISED_SET} ether saddr . ip saddr @{ACTIVE_SET} jump let_through
        ip daddr @{WALLED_GARDEN4_SET} tcp dport {garden_ports} accept
        # Refuse fast, so phones and apps give up at once instead of timing out.
        meta l4proto tcp reject with tcp reset
        reject with icmpx admin-prohibited
    }}

    # DNS from a device not let in gets a small budget, so the resolver the box must offer
    # before login cannot become a free internet link (a DNS tunnel): at most
    # {p.dns_queries_per_second} queries a second after a burst of {p.dns_query_burst}, each query and answer
    # at most {DNS_MAX_QUERY_BYTES} bytes, no DNS over TCP. Let-in devices are not limited.
    chain dns_guard {{
        ether saddr . ip saddr @{AUTHORISED_SET} ct mark set ct mark and {~DNS_UNAUTH_MARK & 0xffffffff:#x} accept
        meta nfproto ipv6 ether saddr @{AUTHORISED_MAC6_SET} ct mark set ct mark and {~DNS_UNAUTH_MARK & 0xffffffff:#x} accept
        meta l4proto tcp reject with tcp reset
        udp length > {DNS_MAX_QUERY_BYTES + 8} drop
        ct mark set ct mark or {DNS_UNAUTH_MARK:#x}
        # Under budget: accept. Over it, or the meter full (a flood of made-up MACs): drop.
        update @{DNS_METER} {{ ether saddr limit rate {p.dns_queries_per_second}/second burst {p.dns_query_burst} packets }} accept
        drop
    }}

    # Answers to those devices: larger ones are dropped (a tunnel's downstream lives in them).
    chain box_output {{
        type filter hook output priority filter; policy accept;
        oifname != "{p.lan}" accept
        ct mark and {DNS_UNAUTH_MARK:#x} == {DNS_UNAUTH_MARK:#x} udp sport 53 udp length > {DNS_MAX_ANSWER_BYTES + 8} drop
    }}

{_ipv6_chain(p, garden_ports)}

    chain let_through {{
        update @{ACTIVE_SET} {{ ether saddr . ip saddr }}
        update @{RECENT_SET} {{ ether saddr . ip saddr }}{up_cap}
        accept
    }}{metered}
}}
"""


def _ipv6_chain(p: RulesetParams, garden_ports: str) -> str:
    """Forwarding of IPv6 (network.ipv6): everything refused when off; when on, only sources
    inside the advertised prefix, and only from a logged-in MAC (or to the walled garden)."""
    if not p.ipv6_prefix:
        return f"""    # network.ipv6 = "off": nothing IPv6 is forwarded, either way, for anyone.
    chain ipv6_clients {{
        iifname "{p.lan}" meta l4proto tcp reject with tcp reset
        iifname "{p.lan}" reject with icmpx admin-prohibited
        drop
    }}"""
    return f"""    # network.ipv6 = "on": the LAN's addresses come from {p.ipv6_prefix} (router advertisements). A
    # source outside it is refused, then the MAC must be logged in. The address is not pinned
    # (SLAAC addresses change): what a copied MAC allows is in README-security.md.
    chain ipv6_clients {{
        iifname "{p.wan}" oifname "{p.lan}" ct state established,related accept
        iifname "{p.wan}" oifname "{p.lan}" drop
        iifname != "{p.lan}" accept
        ip6 saddr != {p.ipv6_prefix} counter reject with icmpx admin-prohibited
        ether saddr @{AUTHORISED_MAC6_SET} update @{ACTIVE_MAC6_SET} {{ ether saddr }} accept
        ip6 daddr @{WALLED_GARDEN6_SET} tcp dport {garden_ports} accept
        meta l4proto tcp reject with tcp reset
        reject with icmpx admin-prohibited
    }}"""
