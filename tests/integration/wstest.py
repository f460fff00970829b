"""Helpers for the WebSocket tests: a python3-websockets client run to
completion with asyncio, and a raw-socket client that builds its own frames
(for the bad frames a real client library refuses to send)."""
import asyncio
import base64
import json
import os
import socket
import struct
import urllib.request

import websockets

from zftest import TIMEOUT

APP = "wsapp:application"


def ws_url(server, query=""):
    return "ws://127.0.0.1:%d/ws%s" % (server.port, query)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 3))


async def connect(server, query="", **kw):
    kw.setdefault("subprotocols", ["zfront.v1"])
    kw.setdefault("open_timeout", TIMEOUT)
    return await websockets.connect(ws_url(server, query), **kw)


async def send(ws, **msg):
    await ws.send(json.dumps(msg))


async def recv(ws, timeout=TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws, topic, **extra):
    await send(ws, type="subscribe", topic=topic, **extra)
    reply = await recv(ws)
    assert reply == {"type": "subscribed", "topic": topic}, reply
    return reply


def publish(server, topic, data, aud=None, thread=False):
    """Publishes through the app (zfront.publish inside a request)."""
    url = "http://127.0.0.1:%d/publish?topic=%s" % (server.port, topic)
    if aud:
        url += "&aud=" + ",".join(aud)
    if thread:
        url += "&thread=1"
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        body = r.read()
    assert body == b"ok", body


# ---------------------------------------------------------------- raw frames


class RawWS:
    """A WebSocket client on a plain socket: handshake, then frames we build."""

    def __init__(self, server, path="/ws", headers=(), rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        head = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                "Sec-WebSocket-Version: 13\r\n" % (path, server.port, key))
        for h in headers:
            head += h + "\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        self.head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(self.head.split(b" ", 2)[1]) if self.head else 0

    def frame(self, opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            k = os.urandom(4)
            payload = bytes(c ^ k[i % 4] for i, c in enumerate(payload))
            hdr += k
        return hdr + payload

    def send(self, opcode, payload, **kw):
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def send_json(self, **msg):
        self.send(0x1, json.dumps(msg).encode())

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def read_frame(self):
        """-> (opcode, payload); EOFError when the server closed the socket."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def read_until_close(self, limit=100000):
        """Reads frames up to the close frame: -> (close code, frames before)."""
        seen = []
        for _ in range(limit):
            op, payload = self.read_frame()
            if op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, seen
            seen.append((op, payload))
        raise AssertionError("no close frame within %d frames" % limit)

    def at_eof(self):
        """True when the server closed the TCP connection (after any data)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()
