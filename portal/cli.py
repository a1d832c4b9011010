"""`skillspot portal`: the portal under gunicorn."""
from __future__ import annotations

import click
from gunicorn.app.base import BaseApplication

from skillspot.config import Config


class PortalServer(BaseApplication):
    """gunicorn with our app factory; each worker builds its own app (own SQLite handles)."""

    def __init__(self, config: Config, bind: list[str], workers: int) -> None:
        self._config = config
        self._options = {"bind": bind, "workers": workers, "worker_class": "sync",
                         "timeout": 30, "graceful_timeout": 5, "accesslog": "-"}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        from portal import build_services, create_app
        return create_app(self._config, build_services(self._config))


@click.command("portal")
@click.option("--bind", multiple=True, help="address:port to listen on (default: LAN address and http_port)")
@click.pass_obj
def portal_command(ctx, bind: tuple[str, ...]) -> None:
    """Run the captive portal under gunicorn."""
    cfg = ctx.config
    binds = list(bind) or [f"{cfg.network.lan_address.ip}:{cfg.portal.http_port}"]
    PortalServer(cfg, binds, cfg.portal.workers).run()
