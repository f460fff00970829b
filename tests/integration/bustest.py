"""Helpers for the bus tests: instances joined by a bus directory, their
counters, WebSocket clients that collect events, and a python3-zmq peer
speaking the documented format (docs/protocols/bus.md)."""
import asyncio
import json
import os
import struct
import time
import urllib.request

import zmq

import wstest
from zftest import TIMEOUT, wait_until

APP = "busapp:application"


def start(factory, busdir, instance, *extra, **kw):
    """An instance named `instance` on the bus in busdir (rescanned every 100 ms)."""
    args = ["--instance-name", instance, "--set", "bus.rescan_interval=100ms"]
    if busdir:
        args = ["--bus-dir", busdir] + args
    kw.setdefault("name", instance)
    return factory(*(args + list(extra)), app=APP, **kw)


def stats(server):
    return server.get_json("/busstats")


def wait_joined(servers, peers=None, subscribers=None, timeout=TIMEOUT):
    """Waits until every instance has its SUB connected to `peers` others
    and `subscribers` subscriptions reached its XPUB (default: all others),
    so no message is lost to a slow joiner."""
    n = len(servers) - 1
    peers = n if peers is None else peers
    subscribers = n if subscribers is None else subscribers

    def ok():
        return all(stats(s)["peers"] >= peers and stats(s)["subscribers"] >= subscribers
                   for s in servers)
    assert wait_until(ok, timeout), [stats(s) for s in servers]


def publish(server, topic, data, aud=None):
    wstest.publish(server, topic, data, aud)


def publish_many(server, topic, n, by):
    url = "http://127.0.0.1:%d/publishmany?topic=%s&n=%d" % (server.port, topic, n)
    req = urllib.request.Request(url, data=by.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT * 3) as r:
        assert r.read() == b"ok"


def listened(server):
    """Lines "TOPIC DATA" heard by the app's zfront.subscribe("listen/*")."""
    try:
        with open(server.marker("listened.log")) as f:
            return [line.rsplit(" ", 1)[0] for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


async def events(ws, n, timeout=TIMEOUT):
    """The next n messages of type event (others are returned too, in `other`)."""
    got, other = [], []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            m = await wstest.recv(ws, left)
        except asyncio.TimeoutError:
            break
        (got if m.get("type") == "event" else other).append(m)
    return got, other


# ---------------------------------------------------------------- zmq peer

HEADER = struct.Struct("!4sQQQ")


def frames(topic, epoch, seq, ident, data, name=b"pypeer", audience=b""):
    """One message in the bus format (5 frames)."""
    return [topic.encode() if isinstance(topic, str) else topic,
            HEADER.pack(b"zfb1", epoch, seq, ident), name, audience,
            json.dumps(data).encode() if not isinstance(data, bytes) else data]


def decode(parts):
    assert len(parts) == 5, parts
    magic, epoch, seq, ident = HEADER.unpack(parts[1])
    assert magic == b"zfb1"
    aud = parts[3].decode().split("\n") if parts[3] else None
    return {"topic": parts[0].decode(), "epoch": epoch, "seq": seq, "id": ident,
            "name": parts[2].decode(), "audience": aud, "data": json.loads(parts[4])}


def recv_parts(sock, timeout=TIMEOUT):
    """The next multipart message, or None after `timeout`."""
    if sock.poll(int(timeout * 1000)):
        return sock.recv_multipart()
    return None


def zsock(ctx, kind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    return s
