#!/usr/bin/python3
"""Writes the seed inputs of fuzz_ws (tests/fuzz/corpus-ws/seed-*).

Each seed is: byte 0 flags, byte 1 chunk size (see fuzz_ws.c), then the
client's WebSocket frames, masked with a zero key (payload readable)."""
import json
import os
import struct
import sys


def frame(payload, op=1, fin=True, key=b"\0\0\0\0", rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    h = bytes([(0x80 if fin else 0) | rsv | op])
    if n < 126:
        h += bytes([0x80 | n])
    elif n < 65536:
        h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return h + key + masked


def j(**kw):
    return frame(json.dumps(kw))


def seeds():
    yield "subscribe-publish", 0, 255, j(type="subscribe", topic="pub/a") + j(type="publish", topic="pub/a", data={"x": 1}) + j(type="unsubscribe", topic="pub/a")
    yield "since", 0, 255, j(type="publish", topic="x", data=1) + j(type="subscribe", topic="x", since=0) + j(type="subscribe", topic="pub/b", since="1-0") + j(type="subscribe", topic="pub/c", since="zz")
    yield "pattern", 0, 7, j(type="subscribe", topic="a*") + j(type="subscribe", topic="pub/*") + j(type="publish", topic="pub/*", data=1) + j(type="publish", topic="pub/q", data="s")
    yield "send-app", 0, 255, j(type="send", topic="app/x", data={"k": [1, 2]}, ref=7) + j(type="send", topic="app/y", data=None)
    yield "send-busy", 2, 255, j(type="send", topic="app/big", data=1) + j(type="send", topic="app/204", data=1)
    yield "send-fail", 0, 255, j(type="send", topic="app/fail", data="x", ref="r")
    yield "errors", 0, 255, frame("not json") + frame("[]") + j(type="x") + j(type="subscribe") + j(type="subscribe", topic="") + j(type="subscribe", topic="nope") + j(type="unsubscribe", topic="x") + j(type="publish", topic="x") + frame('{"type":"a","type":"b","topic":"x"}')
    yield "small-limits", 1, 255, j(type="subscribe", topic="x") + j(type="subscribe", topic="pub/1") + j(type="subscribe", topic="pub/2") + j(type="publish", topic="x", data="y" * 40) + frame("z" * 100)
    yield "fragments-ping", 0, 255, frame('{"type":"subs', fin=False) + frame(b"ping", op=9) + frame('cribe","topic":"x"}', op=0) + frame(b"", op=10)
    yield "close", 0, 255, frame(struct.pack(">H", 1000) + b"bye", op=8)
    yield "close-1byte", 0, 255, frame(b"\x03", op=8)
    yield "binary", 0, 255, frame(b"\x00\x01", op=2)
    yield "masked-key", 0, 255, frame(json.dumps({"type": "subscribe", "topic": "x"}), key=b"\x12\x34\x56\x78")
    yield "graceful", 4, 255, j(type="subscribe", topic="x") + j(type="publish", topic="x", data=[1] * 20)
    yield "unmasked", 0, 255, b"\x81\x02hi"
    yield "big-len", 0, 255, b"\x81\xff" + struct.pack(">Q", 1 << 40) + b"\0\0\0\0"


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus-ws")
    for name, flags, chunk, body in seeds():
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(bytes([flags, chunk]) + body)
