"""The bus with other kinds of peers (docs/protocols/bus.md): a python3-zmq
peer speaking the documented format, malformed messages, instances on
127.0.0.2 and 127.0.0.3 joined over tcp:// through `zfront --bus-forwarder`,
and CURVE (a peer without the right key hears nothing)."""
import os
import shutil
import signal
import tempfile

import pytest
import zmq

import bustest
import wstest
from bustest import frames, start, stats, wait_joined
from zftest import TIMEOUT, free_port, wait_until


@pytest.fixture
def busdir():
    d = tempfile.mkdtemp(prefix="zfbus-")
    yield os.path.join(d, "bus")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_python_zmq_peer_publishes_and_subscribes(server_factory, busdir, ctx):
    a, b = [start(server_factory, busdir, n) for n in ("a", "b")]
    wait_joined([a, b])
    # the peer joins like an instance: it binds DIR/NAME.sock ...
    pub = bustest.zsock(ctx, zmq.PUB)
    pub.bind("ipc://%s/pypeer.sock" % busdir)
    # ... and subscribes to the instances' sockets
    sub = bustest.zsock(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"listen/")
    sub.connect("ipc://%s/a.sock" % busdir)
    wait_joined([a, b], peers=2, subscribers=1)
    assert wait_until(lambda: stats(a)["subscribers"] == 2)  # b and the peer

    epoch = 0x1234ABCD
    pub.send_multipart(frames("listen/py", epoch, 1, 7, {"hello": "zmq"}))
    want = ['listen/py {"hello": "zmq"}']
    for s in (a, b):
        assert wait_until(lambda: bustest.listened(s) == want), bustest.listened(s)

    async def ws_side():
        c = await wstest.connect(b, "?user=bob")
        await wstest.subscribe(c, "news/py")
        pub.send_multipart(frames("news/py", epoch, 2, 8, [1, 2]))
        got, _ = await bustest.events(c, 1)
        await c.close()
        return got

    got = wstest.run(ws_side())
    assert [(e["data"], e["pos"]) for e in got] == [([1, 2], "1234abcd-8")]

    # what an instance publishes arrives in the documented format
    bustest.publish(a, "listen/out", {"x": 1}, aud=["role:Editor", "user:bob"])
    parts = bustest.recv_parts(sub)
    m = bustest.decode(parts)
    assert m["topic"] == "listen/out" and m["name"] == "a" and m["data"] == {"x": 1}
    assert m["audience"] == ["role:Editor", "user:bob"]
    assert m["seq"] == 1 and m["id"] >= 1 and m["epoch"] != epoch
    st = stats(b)
    assert st["received"] == 3 and st["origins"] == 2 and st["dropped_malformed"] == 0, st


def test_sequence_gaps_and_duplicates_are_counted(server_factory, busdir, ctx):
    a = start(server_factory, busdir, "a")
    pub = bustest.zsock(ctx, zmq.PUB)
    pub.bind("ipc://%s/pypeer.sock" % busdir)
    assert wait_until(lambda: stats(a)["peers"] == 1)
    # slow joiner: resend the first message until it is heard
    assert wait_until(lambda: pub.send_multipart(frames("listen/s", 99, 1, 1, 1)) or
                      stats(a)["received"] >= 1)
    pub.send_multipart(frames("listen/s", 99, 1, 1, 1))  # the same again
    pub.send_multipart(frames("listen/s", 99, 5, 2, 2))  # 2, 3 and 4 lost
    assert wait_until(lambda: stats(a)["gaps"] == 1)
    st = stats(a)
    assert st["missed"] == 3 and st["received"] == 2, st
    assert st["duplicates"] >= 1


BAD = [
    ("four frames", [b"listen/bad", bustest.HEADER.pack(b"zfb1", 5, 1, 1), b"p", b"1"]),
    ("six frames", frames("listen/bad", 5, 1, 1, 1) + [b"extra"]),
    ("bad magic", [b"listen/bad", bustest.HEADER.pack(b"zfb2", 5, 1, 1), b"p", b"", b"1"]),
    ("short header", [b"listen/bad", b"zfb1" + bytes(8), b"p", b"", b"1"]),
    ("zero origin", frames("listen/bad", 0, 1, 1, 1)),
    ("zero id", frames("listen/bad", 5, 1, 0, 1)),
    ("not JSON", frames("listen/bad", 5, 1, 1, b"{nope")),
    ("two JSON values", frames("listen/bad", 5, 1, 1, b"1 2")),
    ("topic not UTF-8", frames(b"listen/\xff", 5, 1, 1, 1)),
    ("topic with a control character", frames(b"listen/\x01", 5, 1, 1, 1)),
    ("pattern topic", frames("listen/*", 5, 1, 1, 1)),
    ("empty topic", frames(b"", 5, 1, 1, 1)),
    ("empty audience token", frames("listen/bad", 5, 1, 1, 1, audience=b"a\n\nb")),
    ("name too long", frames("listen/bad", 5, 1, 1, 1, name=b"n" * 65)),
    ("payload not UTF-8", frames("listen/bad", 5, 1, 1, b'"\xc3\x28"')),
    ("empty payload", frames("listen/bad", 5, 1, 1, b"")),
]


def test_malformed_messages_are_dropped_and_counted(server_factory, busdir, ctx):
    a = start(server_factory, busdir, "a", "--set", "bus.max_topic=64")
    pub = bustest.zsock(ctx, zmq.PUB)
    pub.bind("ipc://%s/pypeer.sock" % busdir)
    assert wait_until(lambda: stats(a)["peers"] == 1)
    assert wait_until(lambda: pub.send_multipart(frames("listen/ok", 5, 1, 1, 0)) or
                      stats(a)["received"] >= 1)
    bad = BAD + [("topic over bus.max_topic", frames("listen/" + "t" * 60, 5, 1, 1, 1))]
    for _, msg in bad:
        pub.send_multipart(msg)
    assert wait_until(lambda: stats(a)["dropped_malformed"] == len(bad)), stats(a)
    # still serving, and a good message after the bad ones goes through
    pub.send_multipart(frames("listen/ok", 5, 9, 2, "after"))
    assert wait_until(lambda: 'listen/ok "after"' in bustest.listened(a))
    assert all(not line.startswith("listen/bad") for line in bustest.listened(a))
    assert a.wait_log("bus: malformed message dropped")


def established(local_hex, remote_port):
    """Established IPv4 connections from address local_hex (as in
    /proc/net/tcp) to remote_port."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return [r for r in rows if r[1].startswith(local_hex + ":") and
            r[2].endswith(":%04X" % remote_port) and r[3] == "01"]


def forwarder(server_factory, addr, *extra):
    f = server_factory("--bus-forwarder", addr, *extra, app=None, http=None,
                       python_path=False, tmp_dir=False, wait_listen=False, name="fwd")
    assert f.wait_log(r"bus forwarder: subscribers connect to"), f.log()
    return f


def test_instances_on_two_addresses_joined_through_a_forwarder(server_factory, ctx):
    port = free_port()
    fwd = forwarder(server_factory, "tcp://127.0.0.2:%d" % port)
    # a "host" on 127.0.0.2 and one on 127.0.0.3 (its connections leave from
    # that address: libzmq's source;destination form)
    a = start(server_factory, None, "a", "--bus-via", "tcp://127.0.0.2:%d" % port)
    b = start(server_factory, None, "b", "--bus-via", "tcp://127.0.0.3:0;127.0.0.2:%d" % port)
    wait_joined([a, b], peers=1, subscribers=1)

    async def scenario():
        ca = await wstest.connect(a, "?user=bob")
        cb = await wstest.connect(b, "?user=bob")
        for c in (ca, cb):
            await wstest.subscribe(c, "news/fwd")
        # the forwarder's subscription may reach a just after it joined:
        # publish until b hears it
        got_b = []
        for i in range(50):
            bustest.publish(a, "news/fwd", "from a")
            got_b, _ = await bustest.events(cb, 1, timeout=0.2)
            if got_b:
                break
        bustest.publish(b, "news/fwd", "from b")
        got_a, _ = await bustest.events(ca, i + 2)
        extra, _ = await bustest.events(ca, 1, timeout=0.5)
        await ca.close()
        await cb.close()
        return got_a + extra, got_b

    got_a, got_b = wstest.run(scenario())
    assert [e["data"] for e in got_b] == ["from a"]
    # a hears its own publishes once (its copies back from the forwarder are
    # ignored) and b's
    assert [e["data"] for e in got_a][-1] == "from b"
    assert all(e["data"] == "from a" for e in got_a[:-1])
    assert stats(b)["received"] >= 1 and stats(a)["received"] == 1
    assert stats(a)["origins"] == 1  # its own messages back are not an origin
    # b's connections to the forwarder's two ports really leave from 127.0.0.3
    assert established("0300007F", port) and established("0300007F", port + 1)
    fwd.signal(signal.SIGTERM)
    assert fwd.wait() == 0
    assert "bus forwarder: stopping (SIGTERM)" in fwd.log()


def test_instances_joined_directly_over_tcp(server_factory):
    pa, pb = free_port(), free_port()
    a = start(server_factory, None, "a", "--bus-listen", "tcp://127.0.0.2:%d" % pa,
              "--bus-endpoint", "tcp://127.0.0.3:%d" % pb)
    b = start(server_factory, None, "b", "--bus-listen", "tcp://127.0.0.3:%d" % pb,
              "--bus-endpoint", "tcp://127.0.0.2:%d" % pa)
    wait_joined([a, b])
    bustest.publish(a, "listen/tcp", "a")
    bustest.publish(b, "listen/tcp", "b")
    for s in (a, b):
        assert wait_until(lambda: sorted(bustest.listened(s)) ==
                          ['listen/tcp "a"', 'listen/tcp "b"']), bustest.listened(s)


def keypair(ctx_dir, name):
    pub, sec = zmq.curve_keypair()
    path = os.path.join(ctx_dir, name + ".key")
    with open(path, "wb") as f:
        f.write(b"# CURVE secret key of the bus\n" + sec + b"\n")
    return path, pub, sec


def test_curve_peer_without_the_key_hears_nothing(server_factory, busdir, ctx, tmp_path):
    # Debian's libzmq5 has CURVE (libsodium); install-deps.sh installs it
    assert zmq.has("curve"), "libzmq without CURVE: this test needs Debian's libzmq5"
    keyfile, public, secret = keypair(str(tmp_path), "bus")
    opts = ("--set", "bus.curve_secret_key=" + keyfile)
    a, b = [start(server_factory, busdir, n, *opts) for n in ("a", "b")]
    wait_joined([a, b])

    def subscriber(client_pub, client_sec, curve=True):
        s = bustest.zsock(ctx, zmq.SUB)
        if curve:
            s.curve_serverkey = public
            s.curve_publickey = client_pub
            s.curve_secretkey = client_sec
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect("ipc://%s/a.sock" % busdir)
        return s

    member = subscriber(public, secret)
    stranger = subscriber(*zmq.curve_keypair())  # knows the server key, not the bus key
    plain = subscriber(None, None, curve=False)
    # only the member's subscription gets through: b and the member
    assert wait_until(lambda: stats(a)["subscribers"] == 2)
    for i in range(3):
        bustest.publish(a, "listen/c", i)
    assert wait_until(lambda: len(bustest.listened(b)) == 3)
    got = [bustest.decode(bustest.recv_parts(member))["data"] for _ in range(3)]
    assert got == [0, 1, 2]
    assert bustest.recv_parts(stranger, timeout=0.5) is None
    assert bustest.recv_parts(plain, timeout=0.1) is None
    assert a.wait_log("bus: refused a CURVE client")
    assert stats(a)["subscribers"] == 2


def test_instance_local_status_topic_stays_on_its_instance(server_factory, busdir, ctx):
    """The admin status page's topic (zfront/status, hub.h: instance-local
    "zfront/" topics) describes one instance: it must not travel on the
    bus, or a page would show the other instances' figures as its own."""
    import socket
    import re
    a = start(server_factory, busdir, "a", "--admin", "127.0.0.1:0",
              "--set", "admin.status_interval=100ms")
    m = a.wait_log(r"admin: listening on 127\.0\.0\.1:(\d+)")
    assert m, a.log()
    sub = bustest.zsock(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect("ipc://%s/a.sock" % busdir)
    assert wait_until(lambda: stats(a)["subscribers"] == 1)
    # an open status page makes a publish its status every 100 ms
    page = socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=TIMEOUT)
    page.sendall(b"GET /status/events HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while got.count(b"data: ") < 3:
        chunk = page.recv(65536)
        assert chunk, got
        got += chunk
    assert re.search(rb"data: \{", got)
    # then an ordinary event: the peer gets it, and nothing before it
    bustest.publish(a, "news/after", {"n": 1})
    topics = []
    while "news/after" not in topics:
        parts = bustest.recv_parts(sub)
        assert parts is not None, topics
        topics.append(parts[0].decode())
    page.close()
    assert topics == ["news/after"], topics


def test_bus_counters_are_in_the_metrics(server_factory, busdir):
    """/metrics on the admin listener carries the bus counters (issue 13:
    bus peers and gaps), the same numbers as zfront.bus_stats()."""
    import http.client
    from prometheus_client.parser import text_string_to_metric_families
    a = start(server_factory, busdir, "a", "--admin", "127.0.0.1:0")
    m = a.wait_log(r"admin: listening on 127\.0\.0\.1:(\d+)")
    assert m, a.log()
    b = start(server_factory, busdir, "b")
    wait_joined([a, b])
    for i in range(3):
        bustest.publish(a, "news/m", {"i": i})
    assert wait_until(lambda: stats(b)["received"] == 3), stats(b)

    def metrics():
        c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=TIMEOUT)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return {s.name: s.value for f in text_string_to_metric_families(text)
                for s in f.samples}
    got = metrics()
    st = stats(a)
    assert st["sent"] == 3 and st["peers"] == 1, st
    assert got["zfront_bus_sent_total"] == 3
    assert got["zfront_bus_peers"] == 1
    assert got["zfront_bus_gaps_total"] == st["gaps"] == 0
    assert got["zfront_bus_received_total"] == st["received"]


def test_a_backlog_from_the_bus_is_written_out_as_it_is_received(server_factory, busdir, ctx):
    """An instance that finds a large backlog on the bus (it was paused; a
    peer published a burst) must give its sockets a turn between batches of
    bus messages: before, the loop received the whole backlog in one pass
    before writing anything, so a WebSocket client fell ws.max_send_buffer
    (1 MiB) behind in memory and was cut as a slow consumer (1008), though
    it reads as fast as it can."""
    # (under ThreadSanitizer, ten times slower, a smaller burst: there the
    # test only looks for races)
    n = 2000 if os.environ.get("ZF_TSAN") else 20000
    b = start(server_factory, busdir, "b")
    assert wait_until(lambda: os.path.exists(os.path.join(busdir, "b.sock")))
    pub = bustest.zsock(ctx, zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind("ipc://%s/pypeer.sock" % busdir)
    assert wait_until(lambda: stats(b)["peers"] == 1), stats(b)

    async def scenario():
        # a client that reads as fast as it can: the kernel holds up to 4 MiB
        # for it (net.core.rmem_max here), the library queues without bound
        import socket as _socket
        raw = _socket.socket()
        raw.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4 << 20)
        raw.connect(("127.0.0.1", b.port))
        c = await wstest.connect(b, "?user=bob", sock=raw, max_queue=None)
        await wstest.subscribe(c, "news/flood")
        # wait until b's subscription reached the peer (slow joiner)
        seq = 0
        while True:
            seq += 1
            pub.send_multipart(frames("news/flood", 0x77, seq, seq, {"warm": seq}))
            try:
                m = await wstest.recv(c, 0.2)
            except Exception:
                continue
            if m.get("type") == "event":
                break
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            pad = "x" * 100
            for i in range(n):
                seq += 1
                pub.send_multipart(frames("news/flood", 0x77, seq, seq, {"i": i, "p": pad}))
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        got = []
        while len(got) < n:
            try:
                m = await wstest.recv(c, TIMEOUT)
            except Exception as e:  # closed (1008) or silent
                return got, repr(e)
            if m.get("type") == "event" and "i" in m["data"]:
                got.append(m["data"]["i"])
        await c.close()
        return got, None

    got, err = wstest.run(scenario())
    assert err is None and got == list(range(n)), (len(got), err, b.log()[-2000:])


HB = "zfront/bus/heartbeat"


def test_an_instance_sends_heartbeats_with_its_last_sequence(server_factory, busdir, ctx):
    """Messages lost at the end of a burst (bus.hwm) would only be counted
    when the origin's next event arrives, maybe never: an instance that has
    sent events tells its peers its last sequence (docs/protocols/bus.md,
    heartbeats), a few times after its last event, then stays quiet."""
    a = start(server_factory, busdir, "a", "--set", "bus.heartbeat_interval=100ms")
    sub = bustest.zsock(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, HB.encode())
    sub.connect("ipc://%s/a.sock" % busdir)
    assert wait_until(lambda: stats(a)["subscribers"] == 1)
    # nothing sent yet: no heartbeat
    assert bustest.recv_parts(sub, 0.5) is None
    for i in range(3):
        bustest.publish(a, "news/hb", {"i": i})
    beats = []
    while True:
        parts = bustest.recv_parts(sub, 1.5)
        if parts is None:
            break
        beats.append(bustest.decode(parts))
        assert len(beats) < 20, beats
    assert beats, "no heartbeat"
    assert all(b["topic"] == HB and b["name"] == "a" and b["seq"] == 3 and b["id"] == 3 and
               b["data"] is None and b["audience"] is None for b in beats), beats
    # one per event-less interval after the last event, then quiet: at most 4
    assert 1 <= len(beats) <= 4, beats
    assert stats(a)["sent"] == 3  # heartbeats are not events


def test_a_heartbeat_counts_a_lost_tail_and_is_not_an_event(server_factory, busdir, ctx):
    a = start(server_factory, busdir, "a")
    pub = bustest.zsock(ctx, zmq.PUB)
    pub.bind("ipc://%s/pypeer.sock" % busdir)
    assert wait_until(lambda: stats(a)["peers"] == 1)
    assert wait_until(lambda: pub.send_multipart(frames("listen/t", 77, 1, 1, 1)) or
                      stats(a)["received"] >= 1)
    pub.send_multipart(frames("listen/t", 77, 2, 2, 2))
    assert wait_until(lambda: stats(a)["received"] == 2), stats(a)
    dups = stats(a)["duplicates"]  # the slow-joiner resends of 1
    # the peer's heartbeat with its last sequence: nothing lost yet, no duplicate
    pub.send_multipart(frames(HB, 77, 2, 2, None))
    # then 3 and 4 are lost, and the heartbeat says the last was 4
    pub.send_multipart(frames(HB, 77, 4, 4, None))
    assert wait_until(lambda: stats(a)["gaps"] == 1), stats(a)
    pub.send_multipart(frames("listen/t", 77, 5, 5, 5))  # no second gap for it
    assert wait_until(lambda: stats(a)["received"] == 3), stats(a)
    st = stats(a)
    assert st["missed"] == 2 and st["gaps"] == 1 and st["duplicates"] == dups, st
    assert st["dropped_malformed"] == 0, st
