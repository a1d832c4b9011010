"""`skillspot ledger ...`: reading, sealing, verifying, querying and exporting the ledger."""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from ledger.clock import read_chrony, record_clock
from ledger.db import LedgerError, open_ledger
from ledger.records import log_event, rows

CORE_TABLES = ["leases", "logins", "logouts", "events"]


def format_ms(ms: int | None) -> str:
    """Unix milliseconds as an ISO-8601 UTC string (empty for None)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> int:
    """ISO-8601 with a zone ('2026-11-27T08:00:00Z', '...+07:00') or Unix ms, to Unix ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time. Give ISO-8601 with a zone, e.g. "
                                 "2026-11-27T15:04:05+07:00 or 2026-11-27T08:04:05Z, or Unix milliseconds") from None
    if when.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no time zone; say Z (UTC) or +07:00 (Thai time) so it is not guessed")
    return int(when.timestamp() * 1000)


class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        return parse_time(value)


TIME = TimeParam()


def print_rows(ledger, table: str, limit: int) -> None:
    """Print a table's newest rows with readable times."""
    click.echo(f"-- {table}")
    for row in rows(ledger, table, limit):
        shown = {k: (format_ms(v) if k.endswith("_ms") else v) for k, v in row.items()}
        click.echo("  " + "  ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, "")))


def _open(ctx):
    cfg = ctx.config
    try:
        return cfg, open_ledger(cfg.ledger_path, cfg.box.id)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None


def _require_admin(admin: str) -> None:
    if os.geteuid() != 0:
        raise click.ClickException("this command reads personal traffic data: run it as root on the box")
    if not admin or not admin.strip():
        raise click.ClickException("name the admin who asks: --admin NAME (it is recorded)")


def _key(cfg):
    from ledger.seal import load_or_create_key
    try:
        return load_or_create_key(cfg.box.data_dir)
    except (LedgerError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _public_key(cfg, pubkey: Path | None):
    from ledger.seal import PUB_FILE
    if pubkey is None:
        path = Path(cfg.box.data_dir) / PUB_FILE
        if not path.exists():
            return _key(cfg).public_key()
        pubkey = path
    try:
        return serialization.load_pem_public_key(pubkey.read_bytes())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{pubkey}: not a readable public key ({exc})") from None


@click.group("ledger")
def ledger_group() -> None:
    """Read, verify and export the traffic-data ledger."""


@ledger_group.command("show")
@click.option("--table", type=click.Choice([*CORE_TABLES, "all"]), default="all")
@click.option("--limit", default=20, show_default=True)
@click.pass_obj
def show(ctx, table: str, limit: int) -> None:
    """Print the newest rows of the core tables."""
    cfg, ledger = _open(ctx)
    for t in (CORE_TABLES if table == "all" else [table]):
        print_rows(ledger, t, limit)


@ledger_group.command("flowlog")
@click.option("--stats-file", type=click.Path(dir_okay=False, path_type=Path), help="write counters here as JSON")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), help="created once subscribed")
@click.option("--batch", default=5000, show_default=True, help="events per transaction at most")
@click.option("--flush-seconds", default=0.5, show_default=True, help="write pending events at least this often")
@click.option("--seal-seconds", default=5.0, show_default=True,
              help="seal staged flows at least this often (they are readable by who only once sealed)")
@click.pass_obj
def flowlog(ctx, stats_file, ready_file, batch, flush_seconds, seal_seconds) -> None:
    """Log NAT flows from conntrack events (run inside the box's network namespace, as root)."""
    from ledger.flowlog import FlowLogger
    cfg, ledger = _open(ctx)
    lg = FlowLogger(ledger, Path(cfg.box.data_dir), cfg.ledger.disk_alert_percent, cfg.ledger.netlink_rcvbuf_bytes,
                    batch, flush_seconds, cfg.ledger.housekeeping_seconds, cfg.ledger.nat_flows_only, stats_file,
                    ready_file, seal_seconds=seal_seconds)
    try:
        stats = lg.run()
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(stats.__dict__))


@ledger_group.command("compact")
@click.option("--force", is_flag=True, help="compact even a small batch now")
@click.pass_obj
def compact_cmd(ctx, force: bool) -> None:
    """Move finished flows from staging into compressed segments."""
    from ledger.flows import compact
    cfg, ledger = _open(ctx)
    try:
        click.echo(json.dumps(compact(ledger, force=force, key=_key(cfg))))
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None


@ledger_group.command("seal")
@click.pass_obj
def seal_cmd(ctx) -> None:
    """Seal every row appended since the last seal into the signed hash chain."""
    from ledger.seal import seal
    cfg, ledger = _open(ctx)
    result = seal(ledger, _key(cfg))
    click.echo("nothing new to seal" if result is None else
               f"seal {result['id']} head {result['head_hash']} " + json.dumps(result["tables"]))


@ledger_group.command("verify")
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the box's public key as the centre keeps it (default: the one in data_dir)")
@click.pass_obj
def verify_cmd(ctx, pubkey) -> None:
    """Check the hash chain, its signatures and every sealed row; exit 1 naming each problem.

    Also lists the flow logger's outages (gaps), which are not tampering but are times when
    flows may be missing.
    """
    from ledger.gaps import recent_gaps
    from ledger.seal import verify
    cfg, ledger = _open(ctx)
    rep = verify(ledger, _public_key(cfg, pubkey))
    for p in rep.problems:
        click.echo(f"TAMPERED: {p}")
    gaps = recent_gaps(ledger, 0)
    for g in gaps:
        click.echo(f"GAP: flow logger not listening {format_ms(g['from_ms'])} .. "
                   f"{format_ms(g['to_ms']) if g['to_ms'] is not None else 'now (ongoing)'} "
                   f"({g['duration_ms'] / 1000:.1f} s, {g['reason']}): NAT flows that started and ended then are "
                   "not in the ledger")
    unsealed = ", ".join(f"{t}={n}" for t, n in sorted(rep.unsealed.items())) or "none"
    click.echo(f"{'OK' if rep.ok else 'FAILED'}: {rep.seals} seals, {rep.rows_checked} rows checked, "
               f"head {rep.head}; unsealed rows: {unsealed}; flow logger gaps: {len(gaps)}")
    if not rep.ok:
        sys.exit(1)


@ledger_group.command("who")
@click.option("--ip", "public_ip", required=True,
              help="the public (translated) IPv4 address, or a device's own IPv6 address")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="the public port")
@click.option("--at", "at_ms", required=True, type=TIME, help="the time, ISO-8601 with zone or Unix ms")
@click.option("--slack-ms", default=1000, show_default=True, help="tolerance around the flow's start and end")
@click.option("--admin", required=True, help="the named admin asking (recorded)")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
@click.pass_obj
def who_cmd(ctx, public_ip, port, at_ms, slack_ms, admin, as_json) -> None:
    """Which person, device and session used PUBLIC_IP:PORT at a time."""
    from ledger.gaps import gaps_covering
    from ledger.query import who
    from ledger.seal import seal
    _require_admin(admin)
    cfg, ledger = _open(ctx)
    try:
        # Readers see only sealed staged flows: seal what is pending so the answer is complete
        # and every row it rests on is under the chain.
        seal(ledger, _key(cfg))
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        answers = who(ledger, public_ip, port, at_ms, slack_ms)  # IPv4 or IPv6
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    gaps = gaps_covering(ledger, at_ms, slack_ms)
    log_event(ledger, "query_who", admin, ip=public_ip, port=port, at_ms=at_ms, answers=len(answers),
              in_gap=bool(gaps))
    _print_answers(answers, as_json)
    for g in gaps:
        click.echo(f"INCOMPLETE: the flow logger was not listening {format_ms(g['from_ms'])} .. "
                   f"{format_ms(g['to_ms']) if g['to_ms'] is not None else 'now'} ({g['reason']}): another flow "
                   "may have used this address and port then without a record", err=True)
    if not answers:
        click.echo(f"no flow used {public_ip}:{port} at {format_ms(at_ms)}"
                   f"{' that the ledger recorded (inside a logger gap, see above)' if gaps else ''}", err=True)
        sys.exit(2)


def _print_answers(answers: list[dict], as_json: bool) -> None:
    for a in answers:
        if as_json:
            click.echo(json.dumps(a, ensure_ascii=False, sort_keys=True))
            continue
        f, s = a["flow"], a["session"]
        route = (f"[{f['src_ip']}]:{f['src_port']} (MAC {f.get('mac') or 'unknown'})" if "mac" in f else
                 f"{f['src_ip']}:{f['src_port']} -> {f['pub_ip']}:{f['pub_port']}")
        dst = f"[{f['dst_ip']}]" if ":" in f["dst_ip"] else f["dst_ip"]
        click.echo(f"{f['proto']} {route} -> {dst}:{f['dst_port']}  {format_ms(f['start_ms'])} .. {format_ms(f['end_ms'])}"
                   f"{' (open)' if f['open'] else ''}{' (end unknown)' if f['end_unknown'] else ''}"
                   f"  clock={a['clock']}{'  MAY BE INCOMPLETE (logger gap)' if a.get('may_be_incomplete') else ''}")
        if s is None:
            click.echo("  no login session held that private address then")
        else:
            click.echo(f"  LINE {s['line_user_id']} ({s['display_name']}), MAC {s['mac']}, login {s['login_id']} "
                       f"{format_ms(s['login_ms'])} .. {format_ms(s['end_ms'])}, box {s['box_id']}")


@ledger_group.command("search")
@click.option("--mac", help="one device's MAC")
@click.option("--line-user", help="one LINE user id")
@click.option("--from", "start_ms", type=TIME, required=True, help="window start")
@click.option("--to", "end_ms", type=TIME, required=True, help="window end")
@click.option("--admin", required=True, help="the named admin asking (recorded)")
@click.pass_obj
def search_cmd(ctx, mac, line_user, start_ms, end_ms, admin) -> None:
    """Sessions in a time window, optionally of one MAC or one LINE user (JSON lines)."""
    from ledger.query import sessions
    _require_admin(admin)
    cfg, ledger = _open(ctx)
    found = sessions(ledger, start_ms, end_ms, mac=mac, line_user_id=line_user)
    log_event(ledger, "query_search", admin, mac=mac, line_user=line_user, start_ms=start_ms, end_ms=end_ms,
              answers=len(found))
    for s in found:
        click.echo(json.dumps(s, ensure_ascii=False, sort_keys=True))


@ledger_group.command("export")
@click.option("--from", "start_ms", type=TIME, required=True, help="window start")
@click.option("--to", "end_ms", type=TIME, required=True, help="window end")
@click.option("--mac", help="only this device")
@click.option("--line-user", help="only this LINE user")
@click.option("--ip", help="only this private IP")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="a new directory for the files")
@click.option("--admin", required=True, help="the named admin exporting (recorded)")
@click.pass_obj
def export_cmd(ctx, start_ms, end_ms, mac, line_user, ip, out_dir, admin) -> None:
    """Write CSV (UTF-8 BOM) and JSON Lines for a window, with a signed manifest."""
    from ledger.export import export
    _require_admin(admin)
    cfg, ledger = _open(ctx)
    try:
        m = export(ledger, _key(cfg), out_dir, start_ms, end_ms, admin, cfg.box.office, mac=mac,
                   line_user_id=line_user, ip=ip)
    except (LedgerError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for name, info in sorted(m["files"].items()):
        click.echo(f"{name}: {info['rows']} rows sha256 {info['sha256']}")
    click.echo(f"manifest signed, chain head {m['chain_head']['head_hash'] if m['chain_head'] else '-'}")


@ledger_group.command("verify-export")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--pubkey", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def verify_export_cmd(ctx, out_dir, pubkey) -> None:
    """Check an export directory against its signed manifest."""
    from ledger.export import verify_export
    cfg = ctx.config
    problems = verify_export(out_dir, _public_key(cfg, pubkey))
    for p in problems:
        click.echo(f"BAD: {p}")
    click.echo("OK" if not problems else "FAILED")
    sys.exit(1 if problems else 0)


@ledger_group.command("prune")
@click.pass_obj
def prune_cmd(ctx) -> None:
    """Delete data past retention that the centre has acknowledged; alert if the disk is full."""
    from ledger.retention import disk_check, prune
    cfg, ledger = _open(ctx)
    rep = prune(ledger, cfg.ledger.retention_days)
    disk = disk_check(ledger, cfg.box.data_dir, cfg.ledger.disk_alert_percent)
    click.echo(json.dumps({"cutoff": format_ms(rep.cutoff_ms), "deleted": rep.deleted,
                           "kept_unacknowledged": rep.kept_unacked, "errors": rep.errors,
                           "disk_percent": round(disk["percent"], 1)}))
    if rep.errors or disk["alert"]:
        sys.exit(1)


@ledger_group.command("ack")
@click.argument("seal_id", type=int)
@click.option("--receipt", default="", help="the centre's receipt")
@click.pass_obj
def ack_cmd(ctx, seal_id, receipt) -> None:
    """Record that the centre stored everything up to SEAL_ID (for the sync agent and by hand)."""
    from ledger.retention import acknowledge
    cfg, ledger = _open(ctx)
    try:
        acknowledge(ledger, seal_id, receipt)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"acknowledged through seal {seal_id}")


@ledger_group.command("clock")
@click.pass_obj
def clock_cmd(ctx) -> None:
    """Record chrony's current state (synchronised or not, offset) in the ledger."""
    cfg, ledger = _open(ctx)
    s = read_chrony()
    record_clock(ledger, s)
    click.echo(json.dumps(s.__dict__))
