"""`skillspot portal`: the portal under gunicorn, HTTP and HTTPS from one set of processes.

One gunicorn master and `portal.workers` threaded workers listen on both the HTTP port and,
when a certificate is configured, the HTTPS port: a connection accepted on the HTTPS port is
wrapped in TLS (one SSL context per worker, loaded once), every other one is plain HTTP.
Before this, two gunicorn instances (one per port) of sync workers took three quarters of the
box's memory, and sync workers closed every connection, so each HTTPS request paid a handshake.
"""
from __future__ import annotations


import click

from portal.captive import CLOSE_KEY  # set by the interception middleware

# Threaded workers keep a visitor's connection open between requests (HTTP keep-alive), so an
# HTTPS client pays one TLS handshake per connection instead of one per request. A few threads
# cover the network waits (handshakes, slow phones); the GIL runs one request per worker at a time.
THREADS = 4
KEEPALIVE_SECONDS = 5  # phones reopen the portal in bursts; idle connections go after this
TLS_HANDSHAKE_SECONDS = 10  # a thread waits this long at most for a stalled handshake
# A phone sends its request (or ClientHello) right after connecting, and its HTTPS request with
# or right after the handshake's last message; a connection still silent after this goes back
# to the poller and frees its thread.
FIRST_BYTES_SECONDS = 0.2
# A request head (request line and headers) must be complete this long after its first bytes
# were read, and no larger than this; a phone's is well under 8 KB and comes at once.
REQUEST_HEAD_SECONDS = 10
REQUEST_HEAD_MAX_BYTES = 64 * 1024


def warm_imports() -> None:
    """Import what every worker needs before gunicorn forks, then freeze those objects out of
    the garbage collector's reach: the workers share these pages with the master (copy on
    write) instead of each importing its own copy. The app itself is built in each worker,
    after the fork, so no SQLite or netlink handle is ever shared between processes."""
    import gc

    from base.lean import as_on_a_box
    as_on_a_box()  # also done by the `skillspot` command; here for a master started another way
    import portal  # noqa: F401  Flask, Jinja, Babel
    from portal import admin, api, captive, login  # noqa: F401
    import portal.i18n  # noqa: F401
    gc.collect()
    gc.freeze()


class _TLSSettings:
    """gunicorn's settings as a connection on the HTTPS port sees them: TLS on, with the
    box's certificate and one SSL context for the worker's life. Everything else is shared."""

    def __init__(self, cfg, certfile: str, keyfile: str) -> None:
        self._cfg = cfg
        self.certfile, self.keyfile = certfile, keyfile
        self._context = None

    is_ssl = True

    def ssl_context(self, conf, default_factory):
        if self._context is None:
            self._context = default_factory()
        return self._context

    def __getattr__(self, name: str):
        return getattr(self._cfg, name)


def _dual_port_worker_class():
    """The gthread worker, with connections on the HTTPS port wrapped in TLS. Built on first
    use so that importing this module (for the CLI) does not import gunicorn."""
    from gunicorn.workers import gthread

    class Conn(gthread.TConn):
        def __init__(self, cfg, sock, client, server) -> None:
            tls = getattr(cfg, "portal_tls", None)
            if tls is not None and server[1] == tls[0]:
                cfg = tls[1]
            super().__init__(cfg, sock, client, server)

    class Worker(gthread.ThreadWorker):
        def handle(self, conn):
            """A new connection gets a thread only while it has bytes to read. Browsers open
            connections ahead of need (preconnect) that send nothing for seconds. gthread
            waited up to 5 s for a new connection's first bytes in the thread, and after a
            TLS handshake read the request blocking the thread until the client sent one:
            eight such connections held every thread of both workers, and the portal stopped
            answering on both ports. Here a silent connection, before its first bytes or
            after its handshake, goes back to the poller, which waits without a thread and
            closes it after `keepalive` seconds of silence. The same for a request head that
            comes in pieces (gthread read it blocking, so a client that sent half a request
            and stopped held a thread until it closed): the thread only reads what has come,
            and a head not complete within REQUEST_HEAD_SECONDS ends the connection."""
            if conn.cfg.is_ssl and not conn.initialized:
                # No ClientHello yet (data_ready: the poller woke us because it came).
                if not conn.data_ready and not _readable(conn.sock, FIRST_BYTES_SECONDS):
                    return gthread._DEFER
                conn.sock.setblocking(True)
                conn.sock.settimeout(TLS_HANDSHAKE_SECONDS)  # a client that stalls mid-handshake
                try:
                    conn.init()
                except OSError as exc:  # ssl.SSLError included: a bad or cut handshake
                    self.log.debug("TLS handshake with %s failed: %s", conn.client, exc)
                    return False  # finish_request closes it
                conn.sock.settimeout(None)
            elif not conn.initialized:
                conn.init()  # plain HTTP: only makes the request parser
            # Waits at most FIRST_BYTES_SECONDS here for a silent connection, new or after its
            # handshake (gthread itself waited 5 s, in the thread, for a new one's first bytes).
            head = _gather_head(conn)
            if head == "wait":
                return gthread._DEFER
            if head == "give up":
                self.log.debug("request head from %s too slow or too large; closed", conn.client)
                return False
            conn.head_since = None  # the next request on this connection gets its own time
            return super().handle(conn)

        def init_process(self) -> None:
            port, cert, key = _TLS_LISTENER or (None, None, None)
            if port is not None:
                self.cfg.portal_tls = (port, _TLSSettings(self.cfg, cert, key))
            # gthread makes its connections through the module's TConn: ours decides per port.
            gthread.TConn = Conn
            super().init_process()

    return Worker


def _gather_head(conn) -> str:
    """Read what has arrived of the connection's next request head into its parser's buffer,
    without blocking: "ready" when the head is complete (or the client closed, which the parser
    then reports), "wait" to go back to the poller for more, "give up" when the head took longer
    than REQUEST_HEAD_SECONDS from its first bytes or grew past REQUEST_HEAD_MAX_BYTES."""
    import ssl
    import time

    unreader = conn.parser.unreader
    data = unreader.take_buffered()
    now = time.monotonic()
    ended = False
    conn.sock.setblocking(False)
    try:
        while not _head_complete(data) and len(data) <= REQUEST_HEAD_MAX_BYTES:
            try:
                chunk = conn.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                # Nothing more yet. A head split over packets a moment apart is common: wait a
                # little in the thread before handing the connection back to the poller.
                if time.monotonic() - now < FIRST_BYTES_SECONDS and _readable(conn.sock, FIRST_BYTES_SECONDS):
                    continue
                break
            except OSError:
                ended = True  # reset or cut: the parser meets the same and closes quietly
                break
            if not chunk:
                ended = True
                break
            data += chunk
    finally:
        unreader.unread(data)
        conn.sock.setblocking(True)
    if len(data) > REQUEST_HEAD_MAX_BYTES and not _head_complete(data):
        return "give up"
    if ended or _head_complete(data):
        return "ready"
    if not data:
        return "wait"  # silent: the poller closes it after `keepalive` seconds
    if getattr(conn, "head_since", None) is None:
        conn.head_since = now  # the head's first bytes were read in this call
    return "give up" if now - conn.head_since > REQUEST_HEAD_SECONDS else "wait"


def _head_complete(data: bytes) -> bool:
    return b"\r\n\r\n" in data or b"\n\n" in data


def _readable(sock, seconds: float) -> bool:
    """True if `sock` has bytes to read within `seconds`."""
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(seconds))


_TLS_LISTENER: tuple[int, str, str] | None = None  # (port, certfile, keyfile), set before the fork


def close_when_asked(app):
    """WSGI wrapper: a response whose request set environ[CLOSE_KEY] closes its connection.

    The portal answers intercepted requests (any host but its own, redirected to it by the
    firewall) this way: with keep-alive, a browser would send its first request after the login
    down the same connection, which still leads to the portal, and see the splash page again
    instead of the site. gunicorn ignores a Connection header set by the app, so this asks the
    gunicorn response object (start_response's owner) to close."""
    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            if environ.get(CLOSE_KEY):
                owner = getattr(start_response, "__self__", None)
                if owner is not None and hasattr(owner, "force_close"):
                    owner.force_close()
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return wrapped


def server_options(bind: list[str], workers: int) -> dict:
    """The gunicorn settings of the portal."""
    return {"bind": bind, "workers": workers, "worker_class": _dual_port_worker_class(), "threads": THREADS,
            "keepalive": KEEPALIVE_SECONDS, "timeout": 30, "graceful_timeout": 5, "accesslog": "-",
            # Never sendfile(2): on a TLS connection it would bypass the encryption. The portal's
            # pages are generated, not files, so nothing is lost.
            "sendfile": False,
            "control_socket_disable": True,
            # Each worker opens its own listening sockets (SO_REUSEPORT), and the kernel spreads
            # new connections over them by address hash. On one shared socket the worker that
            # woke first took most of a burst: wrk's 32 keep-alive connections split 29/3, the
            # busy worker ran them on one GIL and the rate of a page fell by half (see
            # docs/footprint.md). A worker that dies loses only the connections still queued on
            # its own socket; phones retry.
            "reuse_port": True}


def refuse_addresses_in_use(bind: list[str]) -> None:
    """Exit with a message naming the address if something already listens on one of `bind`.

    The workers bind with SO_REUSEPORT, which would let a second portal (a copy started by hand
    beside the service, an old one not yet gone) join the first one's addresses without an
    error and silently get half of the visitors. A socket bound without that flag still fails
    on a port someone listens on, so the master tries each address once before forking."""
    import errno
    import socket

    for addr in bind:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Connections of an earlier run waiting in TIME_WAIT are no reason to refuse.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise SystemExit(f"portal: {addr} is already in use: another portal (or another "
                                     f"program) listens there; stop it first (systemctl stop skillspot-portal)") from None
                raise SystemExit(f"portal: cannot listen on {addr}: {exc.strerror}") from None


def portal_server(config, bind: list[str], workers: int, tls_port: int | None = None, tls_only: bool = False):
    """A gunicorn application running the portal app factory; `.run()` serves until stopped.

    `tls_port`: connections accepted on this port are HTTPS (it must be one of `bind`'s ports).
    `tls_only`: every listener is HTTPS (the old `--tls` instance)."""
    global _TLS_LISTENER
    from gunicorn.app.base import BaseApplication

    cert, key = str(config.portal.tls_cert), str(config.portal.tls_key)
    _TLS_LISTENER = (tls_port, cert, key) if tls_port and not tls_only else None

    class PortalServer(BaseApplication):
        """gunicorn with our app factory; each worker builds its own app (own SQLite handles)."""

        def __init__(self) -> None:
            self._options = server_options(bind, workers)
            if tls_only:
                self._options.update(certfile=cert, keyfile=key, worker_class="gthread")
            super().__init__()

        def load_config(self) -> None:
            for key_, value in self._options.items():
                self.cfg.set(key_, value)
            warm_imports()

        def run(self) -> None:
            refuse_addresses_in_use(bind)
            super().run()

        def load(self):
            from portal import build_services, create_app
            return close_when_asked(create_app(config, build_services(config)))

    return PortalServer()


@click.command("portal")
@click.option("--bind", multiple=True, help="address:port to listen on, plain HTTP (default: LAN address "
              "and http_port, plus https_port as HTTPS when portal.tls_cert is set)")
@click.option("--tls", is_flag=True, help="serve only HTTPS, on https_port (default: one server for both)")
@click.pass_obj
def portal_command(ctx, bind: tuple[str, ...], tls: bool) -> None:
    """Run the captive portal under gunicorn."""
    cfg = ctx.config
    from base.config import ConfigError, refuse_placeholder_secrets
    try:
        refuse_placeholder_secrets(cfg, "portal")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ip = cfg.network.lan_address.ip
    if tls:
        if cfg.portal.tls_cert is None:
            raise click.ClickException("--tls needs portal.tls_cert and portal.tls_key in the configuration")
        portal_server(cfg, list(bind) or [f"{ip}:{cfg.portal.https_port}"], cfg.portal.workers,
                      tls_only=True).run()
        return
    binds = list(bind) or [f"{ip}:{cfg.portal.http_port}"]
    tls_port = None
    if cfg.portal.tls_cert is not None and not bind:
        binds.append(f"{ip}:{cfg.portal.https_port}")
        tls_port = cfg.portal.https_port
    portal_server(cfg, binds, cfg.portal.workers, tls_port=tls_port).run()
