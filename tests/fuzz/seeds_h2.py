#!/usr/bin/python3
"""Writes the seed inputs of fuzz_h2 (tests/fuzz/corpus-h2/seed-*).

Each seed is: byte 0 flags, byte 1 chunk size (see fuzz_h2.c), then HTTP/2
frames a client sends after the connection preface (which the harness
adds). Header blocks are HPACK-encoded with python3-hpack (Debian)."""
import base64
import os
import struct
import sys

from hpack import Encoder

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 1, 1, 4, 8, 0x20


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs, ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def req(enc, sid, method="GET", path="/", extra=(), end=True, auth="localhost"):
    hs = [(":method", method), (":scheme", "http"), (":path", path)]
    if auth:
        hs.append((":authority", auth))
    hs += list(extra)
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, enc.encode(hs))


def seeds():
    e = Encoder()
    s0 = settings()
    yield "settings-get", 0, 255, s0 + settings(ack=True) + req(e, 1)
    e = Encoder()
    yield "two-gets", 0, 3, s0 + req(e, 1, path="/a?x=1") + req(e, 3, path="/b", extra=[("cookie", "a=1"), ("cookie", "b=2")])
    e = Encoder()
    body = b"hello world" * 10
    yield "post-body", 0, 255, s0 + req(e, 1, "POST", "/p", [("content-length", str(len(body)))], end=False) + frame(DATA, 0, 1, body[:50]) + frame(DATA, END_STREAM, 1, body[50:])
    e = Encoder()
    yield "post-small-limits", 1, 255, s0 + req(e, 1, "POST", "/p", end=False) + frame(DATA, END_STREAM, 1, b"x" * 100)
    e = Encoder()
    yield "big-window", 0, 255, s0 + req(e, 1, path="/big") + frame(WINDOW, 0, 0, struct.pack(">I", 1 << 20)) + frame(WINDOW, 0, 1, struct.pack(">I", 1 << 20))
    e = Encoder()
    yield "big-late-answer", 4, 255, settings((4, 1 << 20), (5, 32768)) + req(e, 1, path="/big") + req(e, 3, path="/204") + frame(WINDOW, 0, 0, struct.pack(">I", 1 << 20))
    e = Encoder()
    yield "fail", 0, 255, s0 + req(e, 1, path="/fail")
    e = Encoder()
    blk = e.encode([(":method", "GET"), (":scheme", "http"), (":path", "/c"), (":authority", "h"), ("x-long", "v" * 300)])
    yield "continuation", 0, 255, s0 + frame(HEADERS, 0, 1, blk[:10]) + frame(CONT, 0, 1, blk[10:100]) + frame(CONT, END_HEADERS | 0, 1, blk[100:]) + frame(DATA, END_STREAM, 1)
    e = Encoder()
    yield "rst-ping-prio", 0, 255, s0 + req(e, 1, path="/big") + frame(RST, 0, 1, struct.pack(">I", 8)) + frame(PING, 0, 0, b"12345678") + frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 15)) + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))
    e = Encoder()
    yield "trailers", 0, 255, s0 + req(e, 1, "POST", "/t", end=False) + frame(DATA, 0, 1, b"abc") + frame(HEADERS, END_HEADERS | END_STREAM, 1, e.encode([("x-trailer", "1")]))
    e = Encoder()
    yield "padded-prio", 0, 255, s0 + frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIO, 1, b"\x03" + struct.pack(">IB", 0, 200) + e.encode([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x")]) + b"\0\0\0")
    e = Encoder()
    yield "connect-ws", 8, 255, s0 + req(e, 1, "CONNECT", "/ws", [(":protocol", "websocket"), ("sec-websocket-version", "13")], end=False) + frame(DATA, 0, 1, b"\x81\x05hello")
    e = Encoder()
    yield "bad-headers", 0, 255, s0 + req(e, 1, extra=[("connection", "close")]) + req(e, 3, extra=[("te", "trailers"), ("content-length", "5")], end=False) + frame(DATA, END_STREAM, 3, b"abc") + req(e, 5, "GET", "", auth="")
    e = Encoder()
    yield "many-streams-small", 1, 16, s0 + b"".join(req(e, i, path="/%d" % i) for i in range(1, 20, 2))
    e = Encoder()
    yield "lower-id", 0, 255, s0 + req(e, 5) + req(e, 3)
    yield "no-preface", 2, 255, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    # h2c upgrade (flag 16): byte 2 is the length of the HTTP2-Settings value
    for name, hs in (("upgrade", b64(struct.pack(">HIHI", 3, 100, 4, 1 << 16))),
                     ("upgrade-empty", b""), ("upgrade-bad-b64", b"A*B"),
                     ("upgrade-not-6", b64(b"\0\3\0\0\0"))):
        e = Encoder()
        yield name, 16, 255, bytes([len(hs)]) + hs + s0 + frame(WINDOW, 0, 1, struct.pack(">I", 1000)) + req(e, 3, path="/after")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus-h2")
    for name, flags, chunk, body in seeds():
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(bytes([flags, chunk]) + body)
