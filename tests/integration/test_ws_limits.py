"""WebSocket robustness: bad frames closed with the right code, the message
size limit, a slow consumer cut off, dead peers dropped, 1001 on graceful
shutdown, and a broadcast to 1,000 concurrent clients."""
import asyncio
import json
import resource
import signal
import struct
import time

import pytest
import websockets

from wstest import APP, RawWS, connect, publish, recv, run, subscribe
from test_ws_perf import stats
from zftest import wait_until


@pytest.fixture
def srv(server_factory):
    return server_factory("--ws-max-message", "1k", app=APP)


def closed_with(c):
    code, _ = c.read_until_close()
    return code


def test_message_too_big_1009(srv):
    c = RawWS(srv, "/ws?user=bob")
    assert c.status == 101
    c.send(0x1, b'"' + b"a" * 2000 + b'"')
    assert closed_with(c) == 1009
    c.close()


def test_message_at_the_limit_is_fine(srv):
    c = RawWS(srv, "/ws?user=bob")
    c.send_json(type="subscribe", topic="news/" + "a" * 900)
    op, payload = c.read_frame()
    assert op == 0x1 and json.loads(payload)["type"] == "subscribed"
    c.close()


def test_invalid_utf8_1007(srv):
    c = RawWS(srv, "/ws?user=bob")
    c.send(0x1, b'{"type":"subscribe","topic":"\xff\xfe"}')
    assert closed_with(c) == 1007
    c.close()


def test_unmasked_frame_1002(srv):
    c = RawWS(srv, "/ws?user=bob")
    c.send(0x1, b'{"type":"x"}', mask=False)
    assert closed_with(c) == 1002
    c.close()


def test_one_byte_close_payload_1002(srv):
    c = RawWS(srv, "/ws?user=bob")
    c.send(0x8, b"\x03")
    assert closed_with(c) == 1002
    assert c.at_eof()
    c.close()


def test_binary_message_1003(srv):
    c = RawWS(srv, "/ws?user=bob")
    c.send(0x2, b"\x00\x01")
    assert closed_with(c) == 1003
    c.close()


def test_client_close_is_answered_and_socket_closed(srv):
    c = RawWS(srv, "/ws?user=bob")
    c.send(0x8, struct.pack("!H", 1000) + b"bye")
    assert closed_with(c) == 1000
    assert c.at_eof()
    c.close()


def test_slow_consumer_closed_1008(server_factory):
    srv = server_factory("--ws-max-send-buffer", "64k", app=APP)
    c = RawWS(srv, "/ws?user=bob", rcvbuf=4096)
    c.send_json(type="subscribe", topic="news/slow")
    big = "x" * 20000
    for i in range(300):
        publish(srv, "news/slow", big)
        if "slow consumer" in srv.log():
            break
    assert srv.wait_log(r"slow consumer: more than 65536 bytes queued")
    code, frames = c.read_until_close()
    assert code == 1008
    # what was delivered before the cut is whole; the server then let go
    events = [json.loads(p) for op, p in frames if op == 0x1]
    assert events and all(e.get("data", big) == big for e in events[1:])
    assert len(events) < 300
    c.close()


def test_client_that_sends_but_never_reads_closed_1008(server_factory):
    """Replies and errors count against the send limit too: a client that
    floods requests without reading the answers cannot grow the server's
    memory."""
    srv = server_factory("--ws-max-send-buffer", "16k", app=APP)
    c = RawWS(srv, "/ws?user=bob", rcvbuf=4096)
    batch = b"".join(c.frame(0x1, b'{"type":"nonsense","topic":"x"}') for _ in range(500))
    for _ in range(400):
        c.sock.sendall(batch)
        if "slow consumer" in srv.log():
            break
    assert srv.wait_log(r"slow consumer: more than 16384 bytes queued")
    code, frames = c.read_until_close()
    assert code == 1008
    assert all(json.loads(p)["type"] == "error" for op, p in frames if op == 0x1)
    c.close()


def test_dead_peer_dropped(server_factory):
    srv = server_factory("--ws-ping-interval", "300ms", "--ws-pong-timeout", "300ms", app=APP)
    c = RawWS(srv, "/ws?user=bob")
    op, _ = c.read_frame()
    assert op == 0x9  # the server pings an idle client
    # no pong: the server drops the connection
    assert srv.wait_log(r"WebSocket peer is dead")
    assert c.at_eof()
    c.close()


def test_pong_keeps_the_connection(server_factory):
    srv = server_factory("--ws-ping-interval", "200ms", "--ws-pong-timeout", "300ms", app=APP)
    c = RawWS(srv, "/ws?user=bob")
    for _ in range(3):
        op, payload = c.read_frame()
        assert op == 0x9
        c.send(0xA, payload)
    c.send_json(type="subscribe", topic="news/k")
    op, payload = c.read_frame()
    while op == 0x9:
        c.send(0xA, payload)
        op, payload = c.read_frame()
    assert json.loads(payload)["type"] == "subscribed"
    assert "peer is dead" not in srv.log()
    c.close()


def test_keepalive_of_many_sessions_started_at_different_times(server_factory):
    """50 sessions opened one after another share the module's ping and pong deadline lists
    (one timer for all): every live one is pinged again and again and stays, the one that
    never answers is closed as dead, and each session waits for exactly one deadline."""
    import select
    srv = server_factory("--ws-ping-interval", "300ms", "--ws-pong-timeout", "600ms", app=APP)
    clients = []
    for i in range(50):
        c = RawWS(srv, "/ws?user=bob")
        assert c.status == 101
        clients.append(c)
        time.sleep(0.01)  # staggered deadlines
    dead = clients[17]
    pings = {id(c): 0 for c in clients}
    live = [c for c in clients if c is not dead]
    deadline = time.monotonic() + 30
    # answer every ping of the live ones until each has had three and the dead one is gone
    while (min(pings[id(c)] for c in live) < 3 or "peer is dead" not in srv.log()) and \
            time.monotonic() < deadline:
        ready, _, _ = select.select([c.sock for c in live], [], [], 0.5)
        for c in live:
            if c.sock not in ready and not c.buf:
                continue
            op, payload = c.read_frame()
            assert op == 0x9
            pings[id(c)] += 1
            c.send(0xA, payload)
    assert min(pings[id(c)] for c in live) >= 3
    assert srv.wait_log(r"WebSocket peer is dead")
    assert dead.read_frame()[0] == 0x9 and dead.at_eof()
    s = stats(srv)
    assert s["ws.dead_peers"] == 1 and s["ws.open"] == 49
    assert s["ws.timers_waiting"] == 49
    for c in live:  # still served
        c.send_json(type="subscribe", topic="news/k")
        op, payload = c.read_frame()
        while op == 0x9:
            c.send(0xA, payload)
            op, payload = c.read_frame()
        assert json.loads(payload)["type"] == "subscribed"
    # sessions that end while they wait leave their list
    for c in live[:9]:
        c.close()
    assert wait_until(lambda: stats(srv)["ws.open"] == 40)
    assert stats(srv)["ws.timers_waiting"] == 40
    for c in clients:
        c.close()


def test_graceful_shutdown_closes_1001_after_queued_events(server_factory):
    srv = server_factory(app=APP)

    async def go():
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/bye")
        publish(srv, "news/bye", "last")
        srv.signal(signal.SIGTERM)
        got = []
        try:
            while True:
                got.append(json.loads(await ws.recv()))
        except websockets.exceptions.ConnectionClosed as e:
            return got, e.code
    got, code = run(go())
    assert [m["data"] for m in got] == ["last"]
    assert code == 1001
    assert srv.wait() == 0


def test_broadcast_to_1000_clients(server_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 2200, "the test needs 2,200 file descriptors (hard RLIMIT_NOFILE)"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))
    srv = server_factory("--ws-app-auth=off", "--ws-public-topic", "all", nofile=4096, app=APP)
    n = 1000

    async def client(ready):
        ws = await connect(srv, compression=None)
        await subscribe(ws, "all")
        ready.append(1)
        ev = await recv(ws, timeout=60)
        await ws.close()
        return ev["data"]

    async def go():
        ready = []
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(client(ready)))
            if i % 100 == 99:
                await asyncio.sleep(0)
        for _ in range(600):
            if len(ready) == n:
                break
            await asyncio.sleep(0.1)
        assert len(ready) == n
        await asyncio.get_running_loop().run_in_executor(None, publish, srv, "all", "to all")
        return await asyncio.gather(*tasks)
    got = asyncio.run(asyncio.wait_for(go(), 150))
    assert got == ["to all"] * n


def test_max_connections_503(server_factory):
    srv = server_factory("--set", "ws.max_connections=2", app=APP)
    a = RawWS(srv, "/ws?user=bob")
    b = RawWS(srv, "/ws?user=bob")
    assert (a.status, b.status) == (101, 101)
    c = RawWS(srv, "/ws?user=bob")
    assert c.status == 503
    assert b"ws.max_connections" in c.buf
    c.close()
    a.close()  # a slot frees once the server noticed

    def try_again():
        d = RawWS(srv, "/ws?user=bob")
        d.close()
        return d.status == 101
    assert wait_until(try_again)
    b.close()


def test_websocket_connections_count_against_server_max_connections(server_factory):
    """A socket handed from HTTP/1.1 to WebSocket keeps its place in
    server.max_connections while the session lives, and gives it back when
    the session ends (else the server would refuse everyone after enough
    WebSocket sessions came and went)."""
    srv = server_factory("--max-connections", "3", app=APP)
    for _ in range(4):  # more sessions than slots, one after the other
        cs = [RawWS(srv, "/ws?user=bob") for _ in range(2)]
        assert [c.status for c in cs] == [101, 101]
        for c in cs:
            c.send(0x8, struct.pack("!H", 1000))
            assert closed_with(c) == 1000
            c.close()
    # two sessions held, then plain requests still find the third slot (404:
    # the test app has no page there)
    held = [RawWS(srv, "/ws?user=bob") for _ in range(2)]
    assert [c.status for c in held] == [101, 101]
    assert wait_until(lambda: srv.get("/nothing")[0] == 404), srv.log()[-3000:]
    for c in held:
        c.close()
