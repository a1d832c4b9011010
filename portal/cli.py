"""`skillspot portal`: the portal under gunicorn."""
from __future__ import annotations

import click

# Threaded workers keep a visitor's connection open between requests (HTTP keep-alive), so an
# HTTPS client pays one TLS handshake per connection instead of one per request; sync workers
# close after every answer. A few threads cover the network waits (handshakes, slow phones)
# while the GIL keeps one request running per worker at a time anyway.
WORKER_CLASS = "gthread"
THREADS = 4
KEEPALIVE_SECONDS = 5  # phones reopen the portal in bursts; idle connections go after this


def warm_imports() -> None:
    """Import what every worker needs before gunicorn forks, then freeze those objects out of
    the garbage collector's reach: the workers share these pages with the master (copy on
    write) instead of each importing its own copy. The app itself is built in each worker,
    after the fork, so no SQLite or netlink handle is ever shared between processes."""
    import gc

    import portal  # noqa: F401  Flask, Jinja, Babel, the blueprints' modules
    from portal import admin, api, captive, login  # noqa: F401
    import portal.i18n  # noqa: F401
    gc.collect()
    gc.freeze()


def server_options(bind: list[str], workers: int) -> dict:
    """The gunicorn settings both instances (HTTP and HTTPS) run with."""
    return {"bind": bind, "workers": workers, "worker_class": WORKER_CLASS, "threads": THREADS,
            "keepalive": KEEPALIVE_SECONDS, "timeout": 30, "graceful_timeout": 5, "accesslog": "-",
            # Two instances run (HTTP and HTTPS); neither needs a runtime control socket.
            "control_socket_disable": True}


def portal_server(config, bind: list[str], workers: int, tls: bool = False):
    """A gunicorn application running the portal app factory; `.run()` serves until stopped."""
    from gunicorn.app.base import BaseApplication

    class PortalServer(BaseApplication):
        """gunicorn with our app factory; each worker builds its own app (own SQLite handles)."""

        def __init__(self) -> None:
            self._options = server_options(bind, workers)
            if tls:
                self._options.update(certfile=str(config.portal.tls_cert), keyfile=str(config.portal.tls_key))
            super().__init__()

        def load_config(self) -> None:
            for key, value in self._options.items():
                self.cfg.set(key, value)
            warm_imports()

        def load(self):
            from portal import build_services, create_app
            return create_app(config, build_services(config))

    return PortalServer()


@click.command("portal")
@click.option("--bind", multiple=True, help="address:port to listen on (default: LAN address and the port)")
@click.option("--tls", is_flag=True, help="serve HTTPS on https_port with portal.tls_cert/tls_key "
              "(the RFC 8908 API must be HTTPS); run one instance with and one without")
@click.pass_obj
def portal_command(ctx, bind: tuple[str, ...], tls: bool) -> None:
    """Run the captive portal under gunicorn."""
    cfg = ctx.config
    if tls and cfg.portal.tls_cert is None:
        raise click.ClickException("--tls needs portal.tls_cert and portal.tls_key in the configuration")
    port = cfg.portal.https_port if tls else cfg.portal.http_port
    binds = list(bind) or [f"{cfg.network.lan_address.ip}:{port}"]
    portal_server(cfg, binds, cfg.portal.workers, tls=tls).run()
