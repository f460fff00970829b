"""WebSocket notifications: the handshake authorised by the app, topics,
audiences, resume and gaps, client publish, Python publish/subscribe, and
the Origin allow-list. Real clients: python3-websockets, raw sockets."""
import asyncio
import json
import os

import pytest
import websockets

from wstest import APP, RawWS, connect, publish, recv, run, send, subscribe
from zftest import wait_until


@pytest.fixture
def srv(server_factory):
    return server_factory(app=APP)


def test_granted_handshake_subscribe_and_event(srv):
    async def go():
        ws = await connect(srv, "?user=bob")
        assert ws.subprotocol == "zfront.v1"
        await subscribe(ws, "news/a")
        publish(srv, "news/a", {"title": "hello", "n": 1})
        ev = await recv(ws)
        await ws.close()
        return ev
    ev = run(go())
    assert ev["type"] == "event" and ev["topic"] == "news/a"
    assert ev["data"] == {"title": "hello", "n": 1}
    assert isinstance(ev["id"], int) and ev["id"] > 0
    assert ev["pos"].endswith("-%d" % ev["id"])


@pytest.mark.parametrize("query,status", [("", 401), ("?user=mallory", 403)])
def test_refused_handshake_gets_the_apps_answer(srv, query, status):
    c = RawWS(srv, "/ws" + query)
    assert c.status == status
    assert b"Upgrade:" not in c.head and b"Sec-WebSocket-Accept" not in c.head
    if status == 401:
        assert b"WWW-Authenticate: Basic" in c.head
    assert c.at_eof()  # closed after the refusal: no switch, no keep-alive
    c.close()

    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await connect(srv, query)
        return e.value.status_code
    assert run(go()) == status


def test_app_headers_consumed_not_sent(srv):
    c = RawWS(srv, "/ws?user=bob")
    assert c.status == 101
    assert b"Zfront-" not in c.head
    c.close()


def test_topics_outside_the_grant_are_refused(srv):
    async def go():
        ws = await connect(srv, "?user=bob")
        out = []
        for t in ("private/alice", "docs/x", "news*", "private/bob", "news/x/y"):
            await send(ws, type="subscribe", topic=t)
            out.append(await recv(ws))
        await send(ws, type="bogus", topic="news/a")
        out.append(await recv(ws))
        await ws.send("not json")
        out.append(await recv(ws))
        await ws.close()
        return out
    out = run(go())
    assert [m["type"] for m in out[:3]] == ["error"] * 3
    assert all(m["code"] == 403 for m in out[:3])
    assert out[3] == {"type": "subscribed", "topic": "private/bob"}
    assert out[4] == {"type": "subscribed", "topic": "news/x/y"}
    assert out[5]["type"] == "error" and out[5]["code"] == 400
    assert out[6]["type"] == "error" and out[6]["code"] == 400


def test_audience_tokens(srv):
    async def go():
        bob = await connect(srv, "?user=bob")
        ed = await connect(srv, "?user=ed")
        await subscribe(bob, "news/a")
        await subscribe(ed, "news/a")
        publish(srv, "news/a", "editors only", aud=["role:Editor", "role:Manager"])
        publish(srv, "news/a", "for bob", aud=["user:bob"])
        publish(srv, "news/a", "everyone")
        got_ed = [await recv(ed), await recv(ed)]
        got_bob = [await recv(bob), await recv(bob)]
        await bob.close()
        await ed.close()
        return got_ed, got_bob
    got_ed, got_bob = run(go())
    assert [m["data"] for m in got_ed] == ["editors only", "everyone"]
    assert [m["data"] for m in got_bob] == ["for bob", "everyone"]


def test_prefix_subscription(srv):
    async def go():
        ed = await connect(srv, "?user=ed")
        await subscribe(ed, "docs/*")
        publish(srv, "docs/a/b", 1)
        publish(srv, "other", 2)
        publish(srv, "docs/c", 3)
        got = [await recv(ed), await recv(ed)]
        await ed.close()
        return got
    got = run(go())
    assert [(m["topic"], m["data"]) for m in got] == [("docs/a/b", 1), ("docs/c", 3)]


def test_resume_replays_missed_events_then_gap(server_factory):
    srv = server_factory("--hub-history", "3", app=APP)

    async def go():
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/r")
        publish(srv, "news/r", "e1")
        e1 = await recv(ws)
        await ws.close()
        publish(srv, "news/r", "e2")
        publish(srv, "news/r", "e3")
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/r", since=e1["pos"])
        missed = [await recv(ws), await recv(ws)]
        publish(srv, "news/r", "e4")
        live = await recv(ws)
        await ws.close()
        # the history holds 3 events: e1's successor e2 is gone now
        publish(srv, "news/r", "e5")
        publish(srv, "news/r", "e6")
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/r", since=e1["pos"])
        gap = await recv(ws)
        # resuming from the newest position: nothing missed, nothing sent
        await send(ws, type="unsubscribe", topic="news/r")
        assert (await recv(ws))["type"] == "unsubscribed"
        await ws.close()
        return e1, missed, live, gap
    e1, missed, live, gap = run(go())
    assert [m["data"] for m in missed] == ["e2", "e3"]
    assert missed[0]["id"] > e1["id"] and missed[1]["id"] > missed[0]["id"]
    assert live["data"] == "e4"
    assert gap["type"] == "gap" and gap["topic"] == "news/r" and gap["since"] == e1["pos"]
    assert gap["first"] != e1["pos"]


def test_resume_from_newest_sends_nothing(srv):
    async def go():
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/n")
        publish(srv, "news/n", "only")
        e = await recv(ws)
        await ws.close()
        ws = await connect(srv, "?user=bob")
        await subscribe(ws, "news/n", since=e["pos"])
        publish(srv, "news/n", "next")
        nxt = await recv(ws)  # the first thing after "subscribed" is the new event
        await ws.close()
        return nxt
    assert run(go())["data"] == "next"


def test_client_publish_permission(server_factory):
    srv = server_factory("--ws-public-topic", "chat/", app=APP)

    async def go():
        bob = await connect(srv, "?user=bob")
        ed = await connect(srv, "?user=ed")
        await subscribe(ed, "chat/room")
        await send(bob, type="publish", topic="chat/room", data={"msg": "hi"})
        ack = await recv(bob)
        ev = await recv(ed)
        await send(ed, type="publish", topic="chat/room", data="nope")
        refused = await recv(ed)
        await send(bob, type="publish", topic="news/x", data=1)
        refused2 = await recv(bob)
        await bob.close()
        await ed.close()
        return ack, ev, refused, refused2
    ack, ev, refused, refused2 = run(go())
    assert ack["type"] == "published" and ack["id"] == ev["id"]
    assert ev["data"] == {"msg": "hi"} and ev["topic"] == "chat/room"
    assert refused["type"] == "error" and refused["code"] == 403
    assert refused2["type"] == "error" and refused2["code"] == 403


def test_python_listener_runs_on_a_worker(srv):
    publish(srv, "listen/a", {"k": [1, 2]})
    publish(srv, "elsewhere", 1)
    publish(srv, "listen/b", "from a thread", thread=True)
    path = srv.marker("listened.log")

    def lines():
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()
    assert wait_until(lambda: len(lines()) >= 2)
    got = sorted(lines())
    assert len(got) == 2
    assert got[0].startswith('listen/a {"k": [1, 2]} ')
    assert got[1].startswith('listen/b "from a thread" ')
    assert "MainThread" not in got[0]


def test_public_topics_without_the_app(server_factory):
    srv = server_factory("--ws-app-auth=off", "--ws-public-topic", "news/", app=APP)

    async def go():
        ws = await connect(srv)  # no user: the app would answer 401
        await subscribe(ws, "news/p")
        await send(ws, type="subscribe", topic="private/bob")
        refused = await recv(ws)
        publish(srv, "news/p", "x")
        ev = await recv(ws)
        await ws.close()
        return refused, ev
    refused, ev = run(go())
    assert refused["code"] == 403
    assert ev["data"] == "x"
    assert not any("/ws" in c for c in srv.calls())


def test_origin_allow_list(server_factory):
    srv = server_factory(app=APP)
    bad = RawWS(srv, "/ws?user=bob", headers=["Origin: http://evil.example"])
    assert bad.status == 403
    bad.close()
    same = RawWS(srv, "/ws?user=bob", headers=["Origin: http://127.0.0.1:%d" % srv.port])
    assert same.status == 101
    same.close()
    srv2 = server_factory("--ws-origin", "https://good.example", app=APP)
    good = RawWS(srv2, "/ws?user=bob", headers=["Origin: https://good.example"])
    assert good.status == 101
    good.close()
    same2 = RawWS(srv2, "/ws?user=bob", headers=["Origin: http://127.0.0.1:%d" % srv2.port])
    assert same2.status == 403
    same2.close()


@pytest.mark.parametrize("headers,status", [
    (["Sec-WebSocket-Protocol: chat"], 400),
])
def test_bad_handshakes(srv, headers, status):
    c = RawWS(srv, "/ws?user=bob", headers=headers)
    assert c.status == status
    c.close()


def test_bad_key_and_version(srv):
    import socket
    for extra in ("Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n",
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
                  "Sec-WebSocket-Version: 13\r\n"):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(("GET /ws?user=bob HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\n%s\r\n" % extra).encode())
        head = s.recv(4096)
        s.close()
        assert head.startswith(b"HTTP/1.1 400 "), head
    assert not any("/ws" in c for c in srv.calls())


def test_other_paths_are_not_upgraded(srv):
    c = RawWS(srv, "/elsewhere")
    assert c.status == 404
    c.close()


def test_wss_over_the_https_listener(server_factory):
    import ssl
    srv = server_factory(start=False, app=APP)
    srv.args += ["--https", "127.0.0.1:0", "--state-dir", os.path.join(srv.root, "state")]
    srv.start()
    m = srv.wait_log(r"https: listening on 127\.0\.0\.1:(\d+)")
    assert m
    port = int(m.group(1))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    async def go():
        ws = await websockets.connect("wss://127.0.0.1:%d/ws?user=bob" % port, ssl=ctx,
                                      subprotocols=["zfront.v1"])
        await subscribe(ws, "news/tls")
        publish(srv, "news/tls", {"secure": True})
        ev = await recv(ws)
        await ws.close()
        return ev
    assert run(go())["data"] == {"secure": True}


def test_client_messages_to_the_app(server_factory):
    srv = server_factory("--ws-app-path", "/wsmsg", app=APP)

    async def go():
        ws = await connect(srv, "?user=bob", extra_headers={"Cookie": "session=abc"})
        await send(ws, type="send", topic="app/echo", data={"a": [1, 2]}, ref=7)
        ok = await recv(ws)
        await send(ws, type="send", topic="app/echo", data="fail", ref="x")
        refused = await recv(ws)
        await send(ws, type="send", topic="news/x", data=1)
        forbidden = await recv(ws)
        await ws.close()
        return ok, refused, forbidden
    ok, refused, forbidden = run(go())
    assert ok == {"type": "reply", "topic": "app/echo", "status": 200, "ref": 7,
                  "data": {"echo": {"a": [1, 2]}, "topic": "app/echo", "channel": "websocket",
                           "method": "POST", "user": "bob", "ctype": "application/json",
                           "cookie": "session=abc"}}
    assert refused["status"] == 409 and refused["data"] == "not like that"
    assert refused["ref"] == "x"
    assert forbidden["type"] == "error" and forbidden["code"] == 403
    assert "POST /wsmsg?user=bob" in srv.calls()


def test_client_messages_off_without_app_path(srv):
    async def go():
        ws = await connect(srv, "?user=bob")
        await send(ws, type="send", topic="app/echo", data=1)
        r = await recv(ws)
        await ws.close()
        return r
    r = run(go())
    assert r["type"] == "error" and r["code"] == 403
