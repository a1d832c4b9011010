"""A small DNS client the DNS-tunnel tests run inside a phone namespace (stdlib only).

    python dns_client.py stream SERVER QPS SECONDS   -> a tunnel-shaped stream: unique long names
    python dns_client.py one SERVER NAME QTYPE       -> one query (EDNS, 4096-byte buffer)
    python dns_client.py tcp SERVER NAME             -> one query over TCP
    python dns_client.py many SERVER NAME...         -> A then AAAA for each name, one after another

Prints one JSON object. Every loop is bounded in count and time.
"""
from __future__ import annotations

import json
import secrets
import select
import socket
import struct
import sys
import time

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32, as iodine-style tunnels encode data


def query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive query for NAME/QTYPE with an EDNS OPT record offering a 4096-byte buffer."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    opt = b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0)
    return header + qname + struct.pack("!HH", qtype, 1) + opt


def tunnel_name(i: int) -> str:
    """About 200 bytes of 'data' in four 50-character labels: what a tunnel's upstream looks like."""
    labels = ["".join(secrets.choice(ALPHABET) for _ in range(50)) for _ in range(4)]
    return ".".join([*labels, f"s{i}", "tun", "test"])


def stream(server: str, qps: int, seconds: float) -> dict:
    """Send QPS unique queries a second for SECONDS; count answers and their bytes per second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent: dict[int, tuple[float, int]] = {}
    answered: list[tuple[float, int, int]] = []  # (time since start, name bytes carried, answer bytes)
    start = time.monotonic()
    total = int(qps * seconds)
    next_send = start
    i = 0
    end = start + seconds + 2.0  # two more seconds for late answers
    while time.monotonic() < end:
        now = time.monotonic()
        if i < total and now >= next_send:
            qid = i + 1
            name = tunnel_name(i)
            sock.sendto(query(qid, name, 1), (server, 53))
            sent[qid] = (now, len(name))
            i += 1
            next_send += 1.0 / qps
        timeout = max(0.0, min(next_send if i < total else end, end) - time.monotonic())
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            qid = struct.unpack("!H", data[:2])[0]
            if qid in sent:
                answered.append((time.monotonic() - start, sent.pop(qid)[1], len(data)))
    per_second = [0] * (int(seconds) + 3)
    for t, _, _ in answered:
        per_second[min(int(t), len(per_second) - 1)] += 1
    return {"sent": i, "answered": len(answered), "per_second": per_second,
            "name_bytes": sum(n for _, n, _ in answered), "answer_bytes": sum(a for _, _, a in answered),
            "seconds": seconds}


def one(server: str, name: str, qtype: int) -> dict:
    """One UDP query; whether an answer came within two seconds, and its size."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.sendto(query(7, name, qtype), (server, 53))
    try:
        data = sock.recv(8192)
    except socket.timeout:
        return {"answered": False}
    flags, _, ancount = struct.unpack("!HHH", data[2:8])
    return {"answered": True, "bytes": len(data), "rcode": flags & 0xF, "ancount": ancount}


def tcp(server: str, name: str) -> dict:
    """One query over TCP; 'refused' when the connection is reset or refused."""
    msg = query(9, name, 1)
    try:
        with socket.create_connection((server, 53), timeout=3) as conn:
            conn.sendall(struct.pack("!H", len(msg)) + msg)
            conn.settimeout(3)
            data = conn.recv(4096)
            return {"refused": False, "bytes": len(data)}
    except (ConnectionRefusedError, ConnectionResetError):
        return {"refused": True}
    except socket.timeout:
        return {"refused": False, "timeout": True}


if __name__ == "__main__":
    mode, server = sys.argv[1], sys.argv[2]
    if mode == "stream":
        print(json.dumps(stream(server, int(sys.argv[3]), float(sys.argv[4]))))
    elif mode == "one":
        print(json.dumps(one(server, sys.argv[3], int(sys.argv[4]))))
    elif mode == "many":
        print(json.dumps([{"name": n, "qtype": t, **one(server, n, t)} for n in sys.argv[3:] for t in (1, 28)]))
    elif mode == "tcp":
        print(json.dumps(tcp(server, sys.argv[3])))
    else:
        sys.exit(f"unknown mode {mode!r}")
