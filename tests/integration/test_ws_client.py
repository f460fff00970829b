"""The bundled JavaScript client (python/zfront/static/zfront-ws.js) and the
demo's live page: the client runs in Node's WHATWG WebSocket (node
--experimental-websocket, Debian's nodejs) against the demo site; content is
published over HTTP; after a dropped connection the client reconnects and
resumes without losing what was published meanwhile."""
import json
import os
import select
import shutil
import subprocess
import urllib.request

import pytest

from wstest import connect, recv, run, send, subscribe
from zftest import REPO, TIMEOUT

CLIENT = os.path.join(REPO, "python", "zfront", "static", "zfront-ws.js")

NODE_SCRIPT = r"""
const ZfrontSocket = require(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
let pending = null;
// what the client sends, for the test to check
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (d) { out({sent: JSON.parse(d)}); return send.call(this, d); };
// and the server's replies other than events ("subscribed")
const onmsg = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
Object.defineProperty(WebSocket.prototype, "onmessage", {
  get() { return onmsg.get.call(this); },
  set(fn) {
    onmsg.set.call(this, (m) => {
      const o = JSON.parse(m.data);
      if (o.type !== "event") out({got: o});
      fn(m);
    });
  },
});
const zs = new ZfrontSocket(process.argv[3], {
  onState: (s) => out({state: s}),
  onEvent: (t, d, m) => out({event: t, data: d, pos: m.pos}),
  onGap: (t) => out({gap: t}),
});
zs.subscribe(process.argv[4] || "demo/notes");
// the reconnect timer is held until the test says "go"
globalThis.setTimeout = (fn, ms) => { pending = fn; out({reconnect_in: ms}); };
require("readline").createInterface({input: process.stdin}).on("line", (l) => {
  if (l === "drop") zs.ws.close();
  if (l.startsWith("url ")) zs.url = l.slice(4);  // the load balancer moves it
  if (l === "go") pending();
  if (l === "quit") { zs.close(); process.exit(0); }
});
"""


def node_ok():
    node = shutil.which("node")
    if not node:
        return False
    r = subprocess.run([node, "--experimental-websocket", "-e",
                        "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                       capture_output=True, timeout=30)
    return r.returncode == 0


@pytest.fixture
def demo(server_factory, tmp_path):
    return server_factory("--demo", "--state-dir", str(tmp_path / "state"), app=None,
                          python_path=False, env={"ZFRONT_DEMO_BIG_SIZE": "64k"})


def post_note(srv, text):
    req = urllib.request.Request("http://127.0.0.1:%d/live/note" % srv.port,
                                 data=("text=" + text).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        assert r.status == 200


def test_demo_serves_page_and_client(demo):
    with urllib.request.urlopen(demo.url("/live"), timeout=TIMEOUT) as r:
        page = r.read().decode()
    assert '<script src="/zfront-ws.js"></script>' in page
    with urllib.request.urlopen(demo.url("/zfront-ws.js"), timeout=TIMEOUT) as r:
        assert r.headers["Content-Type"].startswith("text/javascript")
        with open(CLIENT, "rb") as f:
            assert r.read() == f.read()


def test_demo_handshake_grants_demo_topics(demo):
    async def go():
        ws = await connect(demo)
        await subscribe(ws, "demo/notes")
        await send(ws, type="subscribe", topic="secret")
        refused = await recv(ws)
        ev_wait = recv(ws)
        post_note(demo, "hello")
        ev = await ev_wait
        await ws.close()
        return refused, ev
    refused, ev = run(go())
    assert refused["code"] == 403
    assert ev["topic"] == "demo/notes" and ev["data"] == {"text": "hello"}


class NodeClient:
    """The bundled client in Node, driven line by line (see NODE_SCRIPT)."""

    def __init__(self, tmp_path, url, topic=None):
        script = tmp_path / "client.js"
        script.write_text(NODE_SCRIPT)
        self.p = subprocess.Popen(["node", "--no-warnings", "--experimental-websocket",
                                   str(script), CLIENT, url] + ([topic] if topic else []),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.buf = b""

    def next_line(self, what):
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.p.stdout], [], [], TIMEOUT)
            assert ready, "the client said nothing for %s s while waiting for %s" % (TIMEOUT, what)
            chunk = os.read(self.p.stdout.fileno(), 4096)
            assert chunk, "node client ended while waiting for %s" % what
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def expect(self, pred, what):
        for _ in range(20):
            msg = self.next_line(what)
            if pred(msg):
                return msg
        raise AssertionError("no %s from the client" % what)

    def say(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def quit(self):
        self.say("quit")
        assert self.p.wait(TIMEOUT) == 0

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def is_event(m):
    return "event" in m


def is_subscribe(m):
    return m.get("sent", {}).get("type") == "subscribe"


def is_subscribed(m):
    return m.get("got", {}).get("type") == "subscribed"


@pytest.mark.skipif(not node_ok(), reason="needs node with --experimental-websocket")
def test_js_client_reconnects_and_resumes(demo, tmp_path):
    node = NodeClient(tmp_path, "ws://127.0.0.1:%d/ws" % demo.port)
    try:
        node.expect(lambda m: m.get("state") == "open", "open")
        assert "since" not in node.expect(is_subscribe, "subscribe")["sent"]
        node.expect(is_subscribed, "subscribed")
        post_note(demo, "one")
        first = node.expect(is_event, "event")
        assert first["data"] == {"text": "one"}
        node.say("drop")
        node.expect(lambda m: "reconnect_in" in m, "reconnect timer")
        post_note(demo, "two")   # published while the client is away
        post_note(demo, "three")
        node.say("go")
        node.expect(lambda m: m.get("state") == "open", "reopen")
        # it resumes with its position of each origin: here one
        sent = node.expect(is_subscribe, "resubscribe")["sent"]
        assert sent["since"] == [first["pos"]] and sent["from"] == first["pos"]
        got = [node.expect(is_event, "resumed event")["data"]["text"] for _ in range(2)]
        assert got == ["two", "three"]
        node.quit()
    finally:
        node.kill()


@pytest.mark.skipif(not node_ok(), reason="needs node with --experimental-websocket")
def test_js_client_resumes_on_another_instance_that_got_a_pair_in_another_order(
        server_factory, tmp_path):
    """Peers X and Y publish at the same moment: instance a gets X2 before Y2,
    b gets Y2 before X2. The client saw X2 on a, not Y2, and is moved to b:
    resuming with its newest id of each origin it gets Y2, then only what
    is new."""
    import zmq
    import bustest
    peerdir = tmp_path / "peers"
    peerdir.mkdir()
    ctx = zmq.Context()
    node = None
    try:
        peers = bustest.TwoPeers(ctx, str(peerdir))
        a, b = [bustest.start(server_factory, None, n, *peers.args(n)) for n in ("a", "b")]
        peers.wait_subscribed()
        node = NodeClient(tmp_path, "ws://127.0.0.1:%d/ws?user=bob" % a.port, "news/pair")
        node.expect(lambda m: m.get("state") == "open", "open")
        node.expect(is_subscribed, "subscribed")
        seen = []
        for peer, n in (("x", 1), ("y", 1), ("x", 2)):
            peers.send(a, peer, n, "news/pair")
            seen.append(node.expect(is_event, "event")["pos"])
        assert seen == [peers.pos("x", 1), peers.pos("y", 1), peers.pos("x", 2)]
        node.say("drop")
        node.expect(lambda m: "reconnect_in" in m, "reconnect timer")
        peers.send(a, "y", 2, "news/pair")
        for peer, n in (("x", 1), ("y", 1), ("y", 2), ("x", 2)):
            peers.send(b, peer, n, "news/pair")
        node.say("url ws://127.0.0.1:%d/ws?user=bob" % b.port)
        node.say("go")
        node.expect(lambda m: m.get("state") == "open", "reopen")
        sent = node.expect(is_subscribe, "resubscribe")["sent"]
        assert sorted(sent["since"]) == sorted([peers.pos("x", 2), peers.pos("y", 1)])
        assert sent["from"] == peers.pos("x", 1)
        assert node.expect(is_event, "resumed event")["pos"] == peers.pos("y", 2)
        peers.send(b, "x", 3, "news/pair")  # the next event is the new one
        assert node.expect(is_event, "live event")["pos"] == peers.pos("x", 3)
        node.quit()
    finally:
        if node:
            node.kill()
        ctx.destroy(linger=0)


FAKE_SOCKET_SCRIPT = r"""
// The client against a fake WebSocket: what it sends, what it passes on.
const sent = [], events = [], gaps = [];
let sock = null;
globalThis.WebSocket = function () { sock = this; this.readyState = 0; };
globalThis.WebSocket.prototype.send = function (d) { sent.push(JSON.parse(d)); };
globalThis.WebSocket.prototype.close = function () {};
globalThis.setTimeout = (fn) => fn();  // reconnect at once: a new socket
const ZfrontSocket = require(process.argv[2]);
const zs = new ZfrontSocket("ws://x/ws", {
  maxOrigins: 3,
  onEvent: (t, d, m) => events.push(m.pos),
  onGap: (t, m) => gaps.push(m.since),
});
const open = () => { sock.readyState = 1; sock.onopen(); };
const ev = (pos) => sock.onmessage({data: JSON.stringify(
  {type: "event", topic: "t", id: Number(pos.split("-")[1]), pos: pos, data: 0})});
zs.subscribe("t", ["a-1"]);
open();
["a-2", "b-1", "a-2", "a-1", "b-2", "c-7", "d-1", "c-8"].forEach(ev);
sock.onclose(); open();  // reconnect: resubscribes
sock.onmessage({data: JSON.stringify({type: "gap", topic: "t", since: "c-8",
                                      positions: ["e-4", "a-9"]})});
sock.onclose(); open();
process.stdout.write(JSON.stringify({sent, events, gaps}) + "\n");
"""


@pytest.mark.skipif(not shutil.which("node"), reason="needs node")
def test_js_client_keeps_newest_per_origin_drops_repeats_and_follows_gaps(tmp_path):
    script = tmp_path / "fake.js"
    script.write_text(FAKE_SOCKET_SCRIPT)
    r = subprocess.run(["node", str(script), CLIENT], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # a repeated or older id of an origin is dropped
    assert out["events"] == ["a-2", "b-1", "b-2", "c-7", "d-1", "c-8"]
    subs = [m for m in out["sent"] if m["type"] == "subscribe"]
    assert subs[0]["since"] == ["a-1"] and "from" not in subs[0]
    # at most maxOrigins origins, the least recently seen (a) dropped first;
    # and the first event it saw
    assert subs[1]["since"] == ["b-2", "d-1", "c-8"] and subs[1]["from"] == "a-2"
    assert out["gaps"] == ["c-8"]
    # after a gap it continues from the server's positions
    assert subs[2]["since"] == ["e-4", "a-9"] and "from" not in subs[2]


def test_demo_announces_content_changes(demo):
    """Every WebDAV change of the demo's content that succeeds is published on
    demo/content (what /live shows); a refused one is not."""
    def dav(method, path, body=None, headers=None):
        status, _, data = demo.request(method, path, body=body, headers=headers)
        return status

    async def go():
        ws = await connect(demo)
        await subscribe(ws, "demo/content")
        got = []
        # refused (the parent folder does not exist): nothing is announced,
        # so the first event is the MKCOL's
        assert dav("PUT", "/nofolder/a.html", b"x") == 409
        assert dav("MKCOL", "/docs") == 201
        assert dav("PUT", "/docs/a.html", b"<p>a</p>") == 201
        assert dav("PUT", "/docs/a.html", b"<p>b</p>") == 204
        assert dav("MOVE", "/docs/a.html",
                   headers={"Destination": demo.url("/docs/b.html")}) == 201
        assert dav("COPY", "/docs/b.html",
                   headers={"Destination": demo.url("/docs/c.html")}) == 201
        assert dav("DELETE", "/docs/b.html") == 204
        assert dav("DELETE", "/docs/b.html") == 404
        assert dav("PUT", "/docs/d.html", b"d") == 201
        for _ in range(7):
            got.append(await recv(ws))
        await ws.close()
        return got
    got = run(go())
    assert [e["type"] for e in got] == ["event"] * 7
    assert [e["topic"] for e in got] == ["demo/content"] * 7
    data = [e["data"] for e in got]
    assert [(d["action"], d["path"], d["status"]) for d in data] == [
        ("MKCOL", "/docs", "201"), ("PUT", "/docs/a.html", "201"),
        ("PUT", "/docs/a.html", "204"), ("MOVE", "/docs/a.html", "201"),
        ("COPY", "/docs/b.html", "201"), ("DELETE", "/docs/b.html", "204"),
        ("PUT", "/docs/d.html", "201")]
    assert data[3]["destination"] == demo.url("/docs/b.html")
    assert data[0]["text"] == "content changed: MKCOL /docs"
