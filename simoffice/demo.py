"""`skillspot demo`: one visitor's whole path through a simulated office, step by step."""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from simoffice.office import PORTAL_HOST, WEB_IP, Office, OfficeError


class DemoFailed(Exception):
    """A step did not give the answer it must."""


@dataclass
class Step:
    """Numbered, timed progress lines."""

    n: int = 0

    def __call__(self, title: str) -> "Step":
        self.n += 1
        self.title = title
        self.start = time.monotonic()
        click.echo(f"[{self.n}] {title} ...", nl=False)
        return self

    def ok(self, detail: str) -> None:
        click.secho(f" ok ({time.monotonic() - self.start:.2f}s)", fg="green")
        click.echo(f"    {detail}")

    def check(self, condition: bool, detail: str) -> None:
        if not condition:
            click.secho(" FAILED", fg="red")
            raise DemoFailed(f"step {self.n} ({self.title}): {detail}")
        self.ok(detail)


def walk(office: Office) -> None:
    """The visitor's path; raises DemoFailed at the first step that goes wrong."""
    step = Step()
    portal = f"http://{PORTAL_HOST}:8080"

    step("phone joins the WiFi and asks for an address (DHCP)")
    lease = office.phone_dhcp()
    step.check(lease["ip"].startswith("10.99.0."), f"leased {lease['ip']}/{lease['prefixlen']} to {lease['mac']}, "
               f"router {lease['router']}, DNS {lease['dns']}")

    step("phone tries the internet directly (HTTPS to a web server)")
    r = office.phone("tcp", WEB_IP, "443")
    step.check(r["result"] == "refused", f"{WEB_IP}:443 -> {r['result']} in {r['seconds']}s (rejected fast by nftables)")

    step("phone's OS sends its captive-portal probe (Android generate_204)")
    r = office.phone("get", "http://connectivitycheck.gstatic.com/generate_204")
    step.check(r.get("status") == 302 and (r.get("location") or "").startswith(portal),
               f"HTTP {r.get('status')} -> {r.get('location', '')[:70]}")

    step("visitor logs in with LINE (in the LINE sandbox) and adds the DSD Official Account")
    r = office.phone("login", portal)
    step.check(r["ok"], f"LINE user {r.get('user')} logged in; portal says: "
               + ("You are online" if r["ok"] else f"HTTP {r.get('status')} {r.get('body', '')[:200]}"))

    step("phone reaches the internet")
    r = office.phone("get", "http://example.com/")
    t = office.phone("tcp", WEB_IP, "443")
    step.check(r.get("status") == 200 and "Hello from the internet" in r.get("body", "") and t["result"] == "connected",
               f"http://example.com/ -> HTTP {r.get('status')}: {r.get('body', '').strip()[:60]!r}; {WEB_IP}:443 {t['result']}")

    step("the probe now gets the answer that closes the phone's sign-in sheet")
    r = office.phone("get", "http://connectivitycheck.gstatic.com/generate_204")
    step.check(r.get("status") == 204, f"HTTP {r.get('status')}")

    step("the kernel's authorised set holds the phone, with its timeout")
    listing = office.box("nft", "list")
    step.check(lease["mac"] in listing, listing.strip())

    step("the ledger recorded the lease and the login")
    shown = office.box("ledger", "show", "--limit", "5")
    step.check(lease["mac"] in shown and "line_user_id=" in shown, "\n    ".join(shown.strip().splitlines()))


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where logs, config and the ledger go (default: a new temporary directory)")
@click.option("--keep", is_flag=True, help="leave the office running until Ctrl-C, to explore it")
def demo_command(workdir: Path | None, keep: bool) -> None:
    """Build a simulated office in network namespaces and walk a phone through it."""
    if os.geteuid() != 0:
        raise click.ClickException("skillspot demo needs root: it creates network namespaces (ip netns) and runs "
                                   "dnsmasq and nftables inside them. Run: sudo skillspot demo")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="skillspot-demo-"))
    # Ctrl-C and SIGTERM both unwind through the Office context manager, which cleans up.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    click.echo(f"Skillspot demo: a simulated DSD office (logs and ledger in {workdir})")
    try:
        with Office(workdir=workdir, say=lambda m: click.echo(f"    {m}")) as office:
            walk(office)
            click.secho("The visitor is online and the box has recorded it.", fg="green", bold=True)
            if keep:
                click.echo(f"Office running: ip netns exec {office.phone_ns} bash  (Ctrl-C to clean up)")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: namespaces and processes removed")
        sys.exit(130)
    except (OfficeError, DemoFailed) as exc:
        raise click.ClickException(f"{exc}\n(logs: {workdir})") from None
    click.echo("namespaces and processes removed")
