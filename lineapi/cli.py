"""`skillspot line-sandbox`: serve the local LINE sandbox with the configured channel."""
from __future__ import annotations

import socket

import click
from werkzeug.serving import make_server

from lineapi import endpoints
from lineapi.sandbox import create_sandbox_app


@click.command("line-sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8701, show_default=True, type=click.IntRange(1, 65535), help="TCP port")
@click.pass_obj
def line_sandbox_command(ctx, host: str, port: int) -> None:
    """Serve a local stand-in for LINE Login and the Messaging API (tests and demos only).

    It uses [line] channel_id, channel_secret, issuer and messaging_access_token from the
    configuration ("sandbox-token" when that is empty). Point login_base_url, api_base_url
    and messaging_base_url at the printed URL to use it.
    """
    line = ctx.config.line
    token = line.messaging_access_token or "sandbox-token"
    app = create_sandbox_app(channel_id=line.channel_id, channel_secret=line.channel_secret,
                             issuer=line.issuer, messaging_access_token=token)
    # Bind here rather than in werkzeug, which prints its own text and exits on a busy port.
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}. "
                                   "Fix: pick a free port with --port, or another --host") from None
    with sock:
        server = make_server(host, port, app, threaded=True, fd=sock.fileno())
    base = f"http://{host if ':' not in host else f'[{host}]'}:{server.port}"
    click.echo(f"LINE sandbox for channel {line.channel_id} listening on {base}")
    click.echo(f"  login page:   {endpoints.join(base, endpoints.AUTHORIZE)}")
    click.echo(f"  token API:    {endpoints.join(base, endpoints.TOKEN)}")
    click.echo(f"  push API:     {endpoints.join(base, endpoints.PUSH)}"
               + ("" if line.messaging_access_token else " (Bearer sandbox-token)"))
    click.echo(f"  pushes seen:  {endpoints.join(base, endpoints.SANDBOX_PUSHES)}")
    click.echo(f"  faults:       {endpoints.join(base, endpoints.SANDBOX_FAULTS)}")
    click.echo(f'Use it with: [line] login_base_url = api_base_url = messaging_base_url = "{base}"')
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
