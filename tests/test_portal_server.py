"""One gunicorn serves the portal on HTTP and HTTPS: TLS on the HTTPS port only, with the box's
certificate, and connections kept alive so a phone pays one handshake for many requests.
Real gunicorn, real TLS, in a scratch namespace of this run (loopback only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from base.config import ALLOW_EXAMPLE_SECRETS_ENV
from netns_util import in_ns, scratch_namespace
from portal.cli import server_options
from simoffice.democerts import make_demo_certs
from simoffice.office import PORTAL_HOST, office_config

HTTP_PORT, HTTPS_PORT = 18080, 18443

SERVER = textwrap.dedent(f"""
    import sys
    from base.config import load_config
    from portal.cli import portal_server
    cfg = load_config(sys.argv[1])
    portal_server(cfg, ["127.0.0.1:{HTTP_PORT}", "127.0.0.1:{HTTPS_PORT}"], 1, tls_port={HTTPS_PORT}).run()
""")
# Two workers, as on a box: they must share a burst of connections.
SERVER_TWO_WORKERS = SERVER.replace(f"{HTTPS_PORT}\"], 1,", f"{HTTPS_PORT}\"], 2,")

CLIENT = textwrap.dedent(f"""
    import http.client, json, socket, ssl, sys, time
    ca = sys.argv[1]
    deadline = time.monotonic() + 60
    while True:  # the server is up when both ports answer
        try:
            socket.create_connection(("127.0.0.1", {HTTP_PORT}), 1).close()
            socket.create_connection(("127.0.0.1", {HTTPS_PORT}), 1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    out = {{}}
    h = http.client.HTTPConnection("127.0.0.1", {HTTP_PORT}, timeout=30)
    h.request("GET", "/api/captive", headers={{"Host": "{PORTAL_HOST}"}}); r = h.getresponse()
    out["http"] = [r.status, json.loads(r.read())["captive"]]
    out["http_connection"] = r.getheader("Connection")
    # A request the firewall redirected here (any other host) closes its connection after the
    # answer: the browser's first request after the login must not land on the portal again.
    h.request("GET", "/", headers={{"Host": "example.com"}}); r = h.getresponse(); r.read()
    out["intercepted"] = [r.status, r.getheader("Connection")]
    ctx = ssl.create_default_context(cafile=ca)
    s = http.client.HTTPSConnection("127.0.0.1", {HTTPS_PORT}, context=ctx, timeout=30)
    # The certificate names the portal, not 127.0.0.1: open the TLS connection by that name.
    s.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {HTTPS_PORT}), 30),
                             server_hostname="{PORTAL_HOST}")
    first = s.sock
    statuses = []
    for _ in range(3):  # one connection, three requests: kept alive, one handshake
        s.request("GET", "/api/captive", headers={{"Host": "{PORTAL_HOST}"}}); r = s.getresponse()
        body = json.loads(r.read())
        statuses.append(r.status)
    out["https"] = statuses
    out["kept_alive"] = s.sock is first
    out["cert_cn"] = dict(x[0] for x in first.getpeercert()["subject"]).get("commonName")
    out["portal_url"] = body["user-portal-url"]
    try:  # plain HTTP on the HTTPS port gets no HTTP answer
        p = http.client.HTTPConnection("127.0.0.1", {HTTPS_PORT}, timeout=10)
        p.request("GET", "/api/captive"); p.getresponse().status
        out["plain_on_tls"] = "answered"
    except Exception as exc:
        out["plain_on_tls"] = type(exc).__name__
    try:  # and TLS on the HTTP port fails
        t = http.client.HTTPSConnection("127.0.0.1", {HTTP_PORT}, context=ctx, timeout=10)
        t.request("GET", "/api/captive"); t.getresponse().status
        out["tls_on_plain"] = "answered"
    except ssl.SSLError as exc:
        out["tls_on_plain"] = "SSLError"
    # A burst of 32 kept-alive TLS connections, as wrk or an office's phones open them: each
    # worker must get a share (on one shared listening socket, one worker took 29 of 32).
    import re, subprocess
    # All 32 connect before any handshake, so they wait in the accept queue together. The
    # handshakes come before any request: a browser's preconnects look like this.
    raw = [socket.create_connection(("127.0.0.1", {HTTPS_PORT}), 30) for _ in range(32)]
    held = [ctx.wrap_socket(r, server_hostname="{PORTAL_HOST}") for r in raw]
    for c in held:  # one request each, so each connection has surely been accepted
        c.sendall(b"GET /api/captive HTTP/1.1\\r\\nHost: {PORTAL_HOST}\\r\\n\\r\\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
    ss = subprocess.run(["ss", "-tnpH", "state", "established", "( sport = :{HTTPS_PORT} )"],
                        capture_output=True, text=True, check=True).stdout
    per_pid = {{}}
    for pid in re.findall(r"pid=(\\d+)", ss):
        per_pid[pid] = per_pid.get(pid, 0) + 1
    out["split"] = sorted(per_pid.values())
    for c in held:
        c.close()
    def answered_beside(held):
        # Status and seconds of a real request while `held` connections stay open; then closes them.
        t0 = time.monotonic()
        h = http.client.HTTPConnection("127.0.0.1", {HTTP_PORT}, timeout=30)
        h.request("GET", "/api/captive", headers={{"Host": "{PORTAL_HOST}"}})
        answer = [h.getresponse().status, round(time.monotonic() - t0, 2)]
        for c in held:
            c.close()
        return answer

    # Connections that send nothing (a browser's preconnects, plain and TLS), three times as many
    # as the two workers have threads, must not keep a real request waiting: gunicorn held a
    # thread 5 s for each before it gave up on it, so this request waited about 15 s.
    silent = [socket.create_connection(("127.0.0.1", port), 30) for port in ({HTTP_PORT}, {HTTPS_PORT}) for _ in range(12)]
    silent += [ctx.wrap_socket(socket.create_connection(("127.0.0.1", {HTTPS_PORT}), 30),
                               server_hostname="{PORTAL_HOST}") for _ in range(4)]
    out["beside_silent"] = answered_beside(silent)
    # Half a request head, then nothing (a slow or hostile client), on as many connections:
    # the threads only read what came, so a real request is still answered at once.
    part = b"GET /api/captive HTTP/1.1\\r\\nHost: {PORTAL_HOST}\\r\\n"
    halves = [socket.create_connection(("127.0.0.1", {HTTP_PORT}), 30) for _ in range(12)]
    halves += [ctx.wrap_socket(socket.create_connection(("127.0.0.1", {HTTPS_PORT}), 30),
                               server_hostname="{PORTAL_HOST}") for _ in range(4)]
    for c in halves:
        c.sendall(part)
    out["beside_halves"] = answered_beside(halves)
    # A head that arrives in two pieces, 0.6 s apart (longer than a thread waits for more), is
    # served once the rest comes.
    c = socket.create_connection(("127.0.0.1", {HTTP_PORT}), 30)
    c.sendall(part)
    time.sleep(0.6)  # the client's pause, not a wait for the server
    c.sendall(b"\\r\\n")
    out["split_head"] = c.recv(4096).split(b"\\r\\n", 1)[0].decode()
    c.close()
    # A head sent a byte a second never completes: the portal ends it after its 10 s.
    c = socket.create_connection(("127.0.0.1", {HTTP_PORT}), 30)
    c.settimeout(0.05)
    t0 = time.monotonic()
    got = b"unanswered"
    for i in range(60):  # bounded: 60 bytes, a second apart
        try:
            c.sendall(part[i:i + 1] if i < len(part) else b"X-Slow: y\\r\\n")
        except OSError:
            got = b""
            break
        try:
            got = c.recv(4096)
            break
        except socket.timeout:
            time.sleep(1)  # the client's pace
        except OSError:
            got = b""
            break
    out["trickle"] = [got.decode(errors="replace")[:40], round(time.monotonic() - t0, 1)]
    c.close()
    print(json.dumps(out))
""")


def test_options_keep_connections_alive_and_never_sendfile():
    opts = server_options(["127.0.0.1:1"], 2)
    assert opts["threads"] > 1 and opts["keepalive"] >= 2 and opts["sendfile"] is False
    assert opts["worker_class"].__mro__[1].__name__ == "ThreadWorker"


@pytest.mark.netns
def test_one_server_answers_http_and_https_with_keep_alive(tmp_path):
    certs = make_demo_certs(tmp_path / "tls", PORTAL_HOST, "10.99.0.1")
    (tmp_path / "data").mkdir()
    config = tmp_path / "skillspot.toml"
    sock = tmp_path / "gate.sock"
    config.write_text(office_config(tmp_path / "data", 3600, certs.cert, certs.key, sock)
                      .replace('socket_group = "skillspot-gate"', 'socket_group = ""'))
    with scratch_namespace() as ns:
        assert in_ns(ns, ["ip", "link", "set", "lo", "up"]).returncode == 0
        log = open(tmp_path / "portal.log", "wb")
        # The portal asks the gate who is let in: run the real one beside it.
        env = {**os.environ, ALLOW_EXAMPLE_SECRETS_ENV: "1"}  # the office's made-up secrets
        gate = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "skillspot.cli", "--config",
                                 str(config), "gate"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER_TWO_WORKERS, str(config)],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            got = in_ns(ns, [sys.executable, "-c", CLIENT, str(certs.ca_cert)], timeout=120)
            assert got.returncode == 0, got.stderr[-2000:] + (tmp_path / "portal.log").read_text()[-2000:]
            out = json.loads(got.stdout)
            # A second portal on the same addresses refuses to start and says why (SO_REUSEPORT
            # would otherwise let it take half of the connections without a word).
            second = in_ns(ns, [sys.executable, "-c", SERVER, str(config)], timeout=60, env=env)
        finally:
            for proc in (server, gate):
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
    assert out["http"] == [200, True] and out["http_connection"] != "close"
    assert out["intercepted"] == [302, "close"]
    assert out["https"] == [200, 200, 200] and out["kept_alive"] is True
    assert out["cert_cn"] == PORTAL_HOST and out["portal_url"] == f"https://{PORTAL_HOST}:8443/"
    assert out["plain_on_tls"] != "answered" and out["tls_on_plain"] == "SSLError"
    assert out["beside_silent"][0] == 200 and out["beside_silent"][1] < 4, out["beside_silent"]
    assert out["beside_halves"][0] == 200 and out["beside_halves"][1] < 4, out["beside_halves"]
    assert out["split_head"] == "HTTP/1.1 200 OK", out["split_head"]
    # Closed without an answer, after the 10 s a head may take and before the 60 s of bytes.
    assert out["trickle"][0] == "" and 9 <= out["trickle"][1] < 30, out["trickle"]
    assert len(out["split"]) == 2 and sum(out["split"]) >= 32 and out["split"][0] >= 4, out["split"]
    assert second.returncode != 0 and f"127.0.0.1:{HTTP_PORT} is already in use" in second.stderr, second.stderr
