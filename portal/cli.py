"""`skillspot portal`: the portal under gunicorn."""
from __future__ import annotations

import click
from gunicorn.app.base import BaseApplication

from base.config import Config, ConfigError, refuse_placeholder_secrets


class PortalServer(BaseApplication):
    """gunicorn with our app factory; each worker builds its own app (own SQLite handles)."""

    def __init__(self, config: Config, bind: list[str], workers: int, tls: bool = False) -> None:
        self._config = config
        self._options = {"bind": bind, "workers": workers, "worker_class": "sync",
                         "timeout": 30, "graceful_timeout": 5, "accesslog": "-",
                         # Two instances run (HTTP and HTTPS); neither needs a runtime control socket.
                         "control_socket_disable": True}
        if tls:
            self._options.update(certfile=str(config.portal.tls_cert), keyfile=str(config.portal.tls_key))
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        from portal import build_services, create_app
        return create_app(self._config, build_services(self._config))


@click.command("portal")
@click.option("--bind", multiple=True, help="address:port to listen on (default: LAN address and the port)")
@click.option("--tls", is_flag=True, help="serve HTTPS on https_port with portal.tls_cert/tls_key "
              "(the RFC 8908 API must be HTTPS); run one instance with and one without")
@click.pass_obj
def portal_command(ctx, bind: tuple[str, ...], tls: bool) -> None:
    """Run the captive portal under gunicorn."""
    cfg = ctx.config
    try:
        refuse_placeholder_secrets(cfg, "portal")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if tls and cfg.portal.tls_cert is None:
        raise click.ClickException("--tls needs portal.tls_cert and portal.tls_key in the configuration")
    port = cfg.portal.https_port if tls else cfg.portal.http_port
    binds = list(bind) or [f"{cfg.network.lan_address.ip}:{port}"]
    PortalServer(cfg, binds, cfg.portal.workers, tls=tls).run()
