"""The ZeroMQ bus on one host (docs/protocols/bus.md): three real instances
joined by ipc:// sockets in a bus directory. A publish in any reaches the
WebSocket clients and Python listeners of all; a killed instance rejoins; a
client resumes on another instance; start-up errors are clear."""
import asyncio
import json
import os
import shutil
import signal
import socket
import tempfile

import pytest

import bustest
import wstest
from bustest import start, stats, wait_joined
from zftest import TIMEOUT, wait_until


@pytest.fixture
def busdir():
    d = tempfile.mkdtemp(prefix="zfbus-")
    yield os.path.join(d, "bus")
    shutil.rmtree(d, ignore_errors=True)


def three(server_factory, busdir, *extra):
    servers = [start(server_factory, busdir, n, *extra) for n in ("a", "b", "c")]
    wait_joined(servers)
    return servers


def test_publish_in_any_reaches_websocket_clients_and_listeners_of_all(server_factory, busdir):
    servers = three(server_factory, busdir)

    async def scenario():
        clients = [await wstest.connect(s, "?user=bob") for s in servers]
        for c in clients:
            await wstest.subscribe(c, "news/all")
        for i, s in enumerate(servers):
            bustest.publish(s, "news/all", {"from": s.name})
        got = [await bustest.events(c, 3) for c in clients]
        for c in clients:
            await c.close()
        return got

    got = wstest.run(scenario())
    for evs, other in got:
        assert other == []
        assert sorted(e["data"]["from"] for e in evs) == ["a", "b", "c"]
        # each event keeps the position its origin gave it: three origins
        assert len({e["pos"].split("-")[0] for e in evs}) == 3
    # the Python listeners of every instance hear the three publishes too
    for s in servers:
        bustest.publish(s, "listen/x", {"from": s.name})
    want = sorted('listen/x {"from": "%s"}' % n for n in ("a", "b", "c"))
    for s in servers:
        assert wait_until(lambda: sorted(bustest.listened(s)) == want), bustest.listened(s)
    for s in servers:
        st = stats(s)
        assert st["sent"] == 2 and st["received"] == 4, st
        assert st["gaps"] == 0 and st["dropped_malformed"] == 0


def test_topic_over_max_topic_stays_local(server_factory, busdir):
    a, b = [start(server_factory, busdir, n, "--set", "bus.max_topic=100") for n in ("a", "b")]
    wait_joined([a, b])
    long_topic = "listen/" + "t" * 100
    bustest.publish(a, long_topic, 1)
    bustest.publish(a, "listen/short", 2)
    assert wait_until(lambda: bustest.listened(b) == ["listen/short 2"])
    assert wait_until(lambda: bustest.listened(a) == ["%s 1" % long_topic, "listen/short 2"])
    assert stats(a)["send_failed"] == 1 and stats(a)["sent"] == 1
    assert stats(b)["dropped_malformed"] == 0
    assert a.wait_log("over bus.max_topic")


def test_audience_travels_with_the_event(server_factory, busdir):
    a, b = [start(server_factory, busdir, n) for n in ("a", "b")]
    wait_joined([a, b])

    async def scenario():
        bob = await wstest.connect(b, "?user=bob")
        ed = await wstest.connect(b, "?user=ed")
        for c in (bob, ed):
            await wstest.subscribe(c, "news/aud")
        bustest.publish(a, "news/aud", "for bob", aud=["user:bob"])
        bustest.publish(a, "news/aud", "for all")
        got_bob, _ = await bustest.events(bob, 2)
        got_ed, _ = await bustest.events(ed, 1)
        extra, _ = await bustest.events(ed, 1, timeout=0.5)
        await bob.close()
        await ed.close()
        return got_bob, got_ed + extra

    got_bob, got_ed = wstest.run(scenario())
    assert [e["data"] for e in got_bob] == ["for bob", "for all"]
    assert [e["data"] for e in got_ed] == ["for all"]


def test_killed_instance_restarts_and_rejoins(server_factory, busdir):
    a, b, c = three(server_factory, busdir)
    bustest.publish(b, "listen/before", 0)
    assert wait_until(lambda: bustest.listened(a) and bustest.listened(c))
    b.signal(signal.SIGKILL)
    b.wait()
    sock = os.path.join(busdir, "b.sock")
    assert os.path.exists(sock)  # SIGKILL leaves the socket file behind
    b2 = start(server_factory, busdir, "b")
    # the stale file was replaced by b itself, or removed by a or c first
    assert (b2.wait_log(r"removing .*b\.sock, left by a dead instance", timeout=1) or
            a.wait_log(r"removed .*b\.sock: nobody listens", timeout=1) or
            c.wait_log(r"removed .*b\.sock: nobody listens", timeout=1))
    wait_joined([a, b2, c])
    bustest.publish(b2, "listen/back", 1)
    bustest.publish(a, "listen/back", 2)
    for s in (a, c):
        assert wait_until(lambda: sorted(bustest.listened(s)) ==
                          ["listen/back 1", "listen/back 2", "listen/before 0"]), \
            (s.name, bustest.listened(s))
    assert wait_until(lambda: sorted(bustest.listened(b2)) == ["listen/back 1", "listen/back 2"])
    # a and c tell the new b from the killed one: a restart
    assert stats(a)["restarts"] == 1 and stats(c)["restarts"] == 1
    assert a.wait_log('bus: hearing instance "b" .*restarted')


def test_stale_socket_of_its_own_name_is_replaced(server_factory, busdir):
    os.makedirs(busdir)
    path = os.path.join(busdir, "a.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)  # a socket file nobody listens on, as a SIGKILL leaves it
    s.close()
    a = start(server_factory, busdir, "a")
    assert a.wait_log("bus: removing %s, left by a dead instance" % path)
    assert a.wait_log("bus: instance .a. publishing")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(path)  # a listens there now
    b = start(server_factory, busdir, "b")
    wait_joined([a, b])


def test_dead_instance_socket_is_removed_and_peer_dropped(server_factory, busdir):
    a, b, c = three(server_factory, busdir)
    c.signal(signal.SIGKILL)
    c.wait()
    assert wait_until(lambda: not os.path.exists(os.path.join(busdir, "c.sock")))
    assert wait_until(lambda: stats(a)["peers"] == 1 and stats(b)["peers"] == 1)
    assert stats(a)["stale_removed"] + stats(b)["stale_removed"] == 1
    # a clean stop removes its own file and the others drop it
    b.stop()
    assert not os.path.exists(os.path.join(busdir, "b.sock"))
    assert wait_until(lambda: stats(a)["peers"] == 0)


def test_client_resumes_on_another_instance_without_loss(server_factory, busdir):
    a, b = [start(server_factory, busdir, n) for n in ("a", "b")]
    wait_joined([a, b])

    async def scenario():
        c = await wstest.connect(a, "?user=bob")
        await wstest.subscribe(c, "news/r")
        for i in range(3):
            bustest.publish(a, "news/r", i)
        seen, _ = await bustest.events(c, 3)
        await c.close()
        # the client saw only the first before the load balancer moved it;
        # meanwhile both instances publish more
        bustest.publish(b, "news/r", 3)
        bustest.publish(a, "news/r", 4)
        assert wait_until(lambda: stats(b)["received"] == 4)
        c = await wstest.connect(b, "?user=bob")
        await wstest.subscribe(c, "news/r", since=seen[0]["pos"])
        resumed, other = await bustest.events(c, 4)
        await c.close()
        return seen, resumed, other

    seen, resumed, other = wstest.run(scenario())
    assert [e["data"] for e in seen] == [0, 1, 2]
    assert other == []
    assert [e["data"] for e in resumed] == [1, 2, 3, 4]
    # positions of a's events are the same on b
    assert [e["pos"] for e in resumed[:2]] == [e["pos"] for e in seen[1:]]


def test_resume_beyond_the_other_instances_history_gets_a_gap(server_factory, busdir):
    a = start(server_factory, busdir, "a")
    b = start(server_factory, busdir, "b", "--hub-history", "2")
    wait_joined([a, b])

    async def scenario():
        c = await wstest.connect(a, "?user=bob")
        await wstest.subscribe(c, "news/g")
        for i in range(4):
            bustest.publish(a, "news/g", i)
        seen, _ = await bustest.events(c, 4)
        await c.close()
        assert wait_until(lambda: stats(b)["received"] == 4)
        c = await wstest.connect(b, "?user=bob")
        await wstest.subscribe(c, "news/g", since=seen[0]["pos"])
        msg = await wstest.recv(c)
        await c.close()
        return seen, msg

    seen, msg = wstest.run(scenario())
    assert msg["type"] == "gap", msg
    assert msg["since"] == seen[0]["pos"]
    assert msg["first"] == seen[2]["pos"] and msg["last"] == seen[3]["pos"]


def test_ten_thousand_messages_complete_and_in_order_per_origin(server_factory, busdir):
    extra = ("--ws-max-send-buffer", "64m")
    a, b, c = three(server_factory, busdir, *extra)
    n = 10000

    async def scenario():
        ws = await wstest.connect(c, "?user=bob", max_queue=None)
        await wstest.subscribe(ws, "news/many")
        loop = asyncio.get_running_loop()
        pubs = [loop.run_in_executor(None, bustest.publish_many, s, "news/many", n, s.name)
                for s in (a, b)]
        got, other = await bustest.events(ws, 2 * n, timeout=TIMEOUT * 6)
        await asyncio.gather(*pubs)
        await ws.close()
        return got, other

    got, other = wstest.run(scenario())
    assert other == []
    for name in ("a", "b"):
        seq = [e["data"]["i"] for e in got if e["data"]["by"] == name]
        assert seq == list(range(n)), (name, len(seq))
    st = stats(c)
    assert st["received"] == 2 * n and st["gaps"] == 0 and st["missed"] == 0, st


def test_ipc_path_over_107_bytes_is_a_clear_error(server_factory, tmp_path):
    d = str(tmp_path / ("d" * (110 - len(str(tmp_path)))))
    s = start(server_factory, d, "a", start=False, wait_listen=False)
    s.start()
    assert s.wait() == 2
    assert "a unix socket path takes at most 107" in s.log()
    assert not os.path.exists(d)


def test_instance_name_in_use_is_refused(server_factory, busdir):
    a = start(server_factory, busdir, "a")
    dup = start(server_factory, busdir, "a", wait_listen=False)
    assert dup.wait() != 0
    assert 'instance name "a" is in use' in dup.log()
    # the first one still owns its socket
    assert stats(a)["sent"] == 0
    assert os.path.exists(os.path.join(busdir, "a.sock"))


def test_bad_instance_name_is_refused(server_factory, busdir):
    s = start(server_factory, busdir, "../x", wait_listen=False, name="badname")
    assert s.wait() == 2
    assert "bus.instance_name" in s.log()
