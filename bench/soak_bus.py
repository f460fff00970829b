"""The bus part of bench/soak: a python3-zmq peer on the instance's bus
directory, speaking the bus format (docs/protocols/bus.md), as another
instance of the host would.

- It binds an XPUB at ipc://DIR/soakpeer.sock; the instance finds it on its
  next rescan and subscribes (the XPUB sees the subscription, so nothing is
  sent before anyone listens). Then it publishes {"n": i} on demo/bus every
  `--bus-publish-gap` seconds (5 frames: topic, header "zfb1" + epoch + seq
  + id, name, audience, JSON): bus_pub counts them. The soak's WebSocket
  subscribers subscribe to demo/bus too (the instance injects the peer's
  events into its hub): bus_ws counts what they receive, and a hole in n
  as an error.
- Its SUB connects to the instance's ipc://DIR/soak.sock, subscribed to
  "demo/": every event the instance publishes (the WebSocket publisher's
  chat, the WebDAV changes) arrives here; bus_sub counts those in the bus
  format, and counts a message that is not, or a hole in an origin's
  sequence, as an error."""
import json
import os
import random
import struct
import time

import zmq

HEADER = struct.Struct("!4sQQQ")
TOPIC = "demo/bus"
PEER_NAME = "soakpeer"
INSTANCE_NAME = "soak"


def frames(epoch, seq, data):
    return [TOPIC.encode(), HEADER.pack(b"zfb1", epoch, seq, seq), PEER_NAME.encode(), b"",
            json.dumps(data).encode()]


def run(ctx):
    stats, stop, bus_dir = ctx.stats, ctx.stop, ctx.srv.bus_dir
    gap = ctx.args.bus_publish_gap
    z = zmq.Context()
    pub = z.socket(zmq.XPUB)
    sub = z.socket(zmq.SUB)
    for s in (pub, sub):
        s.setsockopt(zmq.LINGER, 0)
    try:
        pub.bind("ipc://%s" % os.path.join(bus_dir, PEER_NAME + ".sock"))
        sub.setsockopt(zmq.SUBSCRIBE, b"demo/")
        sub.connect("ipc://%s" % os.path.join(bus_dir, INSTANCE_NAME + ".sock"))
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)
        poller.register(sub, zmq.POLLIN)
        epoch = random.getrandbits(63) | 1
        seq, joined, next_pub = 0, False, 0.0
        last_seq = {}  # origin epoch -> last sequence heard
        while not stop.is_set():
            now = time.monotonic()
            if joined and now >= next_pub:
                seq += 1
                pub.send_multipart(frames(epoch, seq, {"n": seq}))
                stats.good("bus_pub")
                next_pub = now + gap
            for sock, _ in poller.poll(100):
                if sock is pub:
                    msg = pub.recv()
                    if msg[:1] == b"\x01":
                        joined = True  # the instance subscribed
                    continue
                parts = sub.recv_multipart()
                try:
                    magic, origin, oseq, ident = HEADER.unpack(parts[1])
                    if len(parts) != 5 or magic != b"zfb1" or not origin or not ident:
                        raise ValueError("not in the bus format")
                    json.loads(parts[4])
                except (ValueError, IndexError, struct.error) as e:
                    stats.bad("bus_sub", "%s: %r" % (e, parts[:2]))
                    continue
                prev = last_seq.get(origin)
                if prev is not None and oseq != prev + 1:
                    stats.bad("bus_sub", "origin %x: sequence %d after %d" % (origin, oseq, prev))
                last_seq[origin] = oseq
                stats.good("bus_sub")
        if not joined:
            stats.bad("bus_pub", "the instance never subscribed to %s.sock" % PEER_NAME)
    finally:
        pub.close(0)
        sub.close(0)
        z.term()
