"""The nftables ruleset: rendered from config, checked by the real nft, applied atomically,
and the authorised set changed in place."""
from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest

from netcfg.ruleset import RulesetParams, render_ruleset
from netns_util import in_ns, scratch_namespace

PARAMS = RulesetParams(lan="wlan0", wan="eth0", lan_ip="10.99.0.1", http_port=8080, https_port=8443,
                       walled_garden_ports=(443,))


def test_render_has_the_gate_and_the_garden():
    text = render_ruleset(PARAMS)
    assert "type ether_addr . ipv4_addr" in text and "flags timeout" in text
    assert "ether saddr . ip saddr @authorised ether saddr . ip saddr @active jump let_through" in text
    assert "update @active { ether saddr . ip saddr }" in text and "timeout 900s" in text
    assert "up_meter" not in text  # no bandwidth cap unless configured
    assert "ip daddr @walled_garden4 tcp dport { 443 } accept" in text
    assert "tcp dport 80 redirect to :8080" in text
    assert 'oifname "eth0" meta nfproto ipv4 masquerade' in text  # IPv6 is never translated
    assert "reject with tcp reset" in text and "reject with icmpx admin-prohibited" in text
    # IPv6 is off unless configured: nothing IPv6 is forwarded, for anyone.
    assert "meta nfproto ipv6 jump ipv6_clients" in text and "ether saddr @authorised_mac6 update @active_mac6" not in text
    # The portal, DNS and DHCP are what an unauthorised visitor may reach on the box.
    assert "udp dport { 53, 67 } accept" in text and "tcp dport { 53, 8080, 8443 } accept" in text
    # Nothing renders a chain named by an nft keyword (`fwd`), or closes two blocks on one line.
    assert "chain fwd" not in text and "} }" not in text


def test_render_follows_the_config():
    other = RulesetParams(lan="lan0", wan="wan0", lan_ip="192.0.2.1", http_port=80, https_port=443,
                          walled_garden_ports=(80, 443))
    text = render_ruleset(other)
    assert 'iifname != "lan0"' in text and "ip daddr 192.0.2.1 return" in text
    assert "tcp dport { 80, 443 } accept" in text


def test_bandwidth_cap_is_a_per_device_meter_each_way():
    capped = RulesetParams(lan="lan0", wan="wan0", lan_ip="192.0.2.1", http_port=80, https_port=443,
                           walled_garden_ports=(443,), idle_seconds=120, bandwidth_kbit=8000)
    text = render_ruleset(capped)
    assert "update @up_meter { ip saddr limit rate over 1000000 bytes/second burst 1000000 bytes } drop" in text
    assert ('iifname "wan0" oifname "lan0" update @down_meter { ip daddr limit rate over 1000000 bytes/second '
            'burst 1000000 bytes } drop') in text
    assert "timeout 120s" in text


SET_SCRIPT = textwrap.dedent("""
    # The gate's own pieces, one process per call: its index is rebuilt from the kernel each
    # time, as at every gate start.
    import json, sys
    from netcfg.ruleset import RulesetParams, render_ruleset
    from netcfg.nft import apply_ruleset, NftSets
    from netcfg.gated import GateService
    p = RulesetParams("wlan0", "eth0", "10.99.0.1", 8080, 8443, (443,), int(sys.argv.pop()), 8000)
    action = sys.argv[1]
    s = NftSets()
    gate = GateService(s, lambda ip: None)
    if action != "apply":
        gate.load(s.dump())
    if action == "apply":
        print(apply_ruleset(render_ruleset(p)))
    elif action in ("authorise", "authorise-list"):
        gate.authorise(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif action == "revoke":
        print(json.dumps(gate.revoke(sys.argv[2])))
    if action in ("list", "authorise-list"):  # what the kernel lets through: a session and an idle element
        state = s.dump()
        print(json.dumps([{"mac": m, "ip": i} for (m, i), (t, left) in state.authorised.items()
                          if left > 0 and (m, i) in state.active]))
""")


@pytest.mark.netns
def test_ruleset_applies_and_the_set_expires_in_the_kernel(tmp_path):
    script = tmp_path / "sets.py"
    script.write_text(SET_SCRIPT)

    def run(*args: str) -> str:
        proc = in_ns(ns, [sys.executable, str(script), *args, "600"])  # idle limit: 600 s
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    with scratch_namespace() as ns:
        check = in_ns(ns, ["nft", "-c", "-f", "-"], input=render_ruleset(PARAMS))
        assert check.returncode == 0, check.stderr
        assert run("apply").strip() == "0"
        assert run("apply").strip() == "0"  # idempotent
        run("authorise", "aa:bb:cc:dd:ee:01", "10.99.0.50", "600")
        run("authorise", "aa:bb:cc:dd:ee:01", "10.99.0.51", "600")  # the device's address changed
        # Re-applying the ruleset carries the live elements over with their time left.
        assert run("apply").strip() == "3"  # one in each of authorised, authorised_mac6 and active
        run("authorise", "aa:bb:cc:dd:ee:02", "10.99.0.52", "2")
        listed = {(a["mac"], a["ip"]) for a in json.loads(run("list"))}
        assert ("aa:bb:cc:dd:ee:01", "10.99.0.51") in listed and len(listed) <= 2  # ee:02 may be gone on a slow run
        deadline = time.monotonic() + 20
        while (listed := {a["mac"] for a in json.loads(run("list"))}) != {"aa:bb:cc:dd:ee:01"}:
            assert time.monotonic() < deadline, f"the kernel did not expire the 2-second element: {listed}"
            time.sleep(0.2)
        assert run("revoke", "aa:bb:cc:dd:ee:01").strip() == '["10.99.0.51"]'
        assert run("revoke", "aa:bb:cc:dd:ee:01").strip() == "[]"
        assert run("list").strip() == "[]"


@pytest.mark.netns
def test_a_broken_ruleset_is_refused_and_the_old_one_stays(tmp_path):
    broken = render_ruleset(PARAMS).replace("chain clients", "chain fwd")
    with scratch_namespace() as ns:
        assert in_ns(ns, ["nft", "-f", "-"], input=render_ruleset(PARAMS)).returncode == 0
        script = tmp_path / "apply.py"
        script.write_text("import sys\nfrom netcfg.nft import apply_ruleset, NftError\n"
                          "try:\n    apply_ruleset(sys.stdin.read())\nexcept NftError as e:\n"
                          "    print(e); sys.exit(3)\n")
        proc = in_ns(ns, [sys.executable, str(script)], input=broken)
        assert proc.returncode == 3 and "checking the ruleset failed" in proc.stdout
        still = in_ns(ns, ["nft", "list", "chain", "inet", "skillspot", "clients"])
        assert still.returncode == 0 and "@authorised ether saddr . ip saddr @active jump let_through" in still.stdout


@pytest.mark.netns
def test_an_idle_device_drops_out_while_its_session_runs(tmp_path):
    script = tmp_path / "sets.py"
    script.write_text(SET_SCRIPT)

    def run(*args: str) -> str:
        proc = in_ns(ns, [sys.executable, str(script), *args, "2"])  # idle limit: 2 s
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    with scratch_namespace() as ns:
        run("apply")
        # Listed in the same process as it is let in: a slow start of the next one could outlast 2 s.
        assert [a["mac"] for a in json.loads(run("authorise-list", "aa:bb:cc:dd:ee:03", "10.99.0.53", "600"))] == \
            ["aa:bb:cc:dd:ee:03"]
        deadline = time.monotonic() + 20  # no packet from the device renews its idle element
        while run("list").strip() != "[]":
            assert time.monotonic() < deadline, "an idle device is still listed as let through"
            time.sleep(0.2)
        elements = in_ns(ns, ["nft", "list", "set", "inet", "skillspot", "authorised"]).stdout
        assert "aa:bb:cc:dd:ee:03" in elements  # the session element itself had time left
        assert run("revoke", "aa:bb:cc:dd:ee:03").strip() == '["10.99.0.53"]'  # not let through, but cleaned
        assert "aa:bb:cc:dd:ee:03" not in in_ns(ns, ["nft", "list", "set", "inet", "skillspot", "authorised"]).stdout
