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
const zs = new ZfrontSocket(process.argv[3], {
  onState: (s) => out({state: s}),
  onEvent: (t, d, m) => out({event: t, data: d, pos: m.pos}),
  onGap: (t) => out({gap: t}),
});
zs.subscribe("demo/notes");
// the reconnect timer is held until the test says "go"
globalThis.setTimeout = (fn, ms) => { pending = fn; out({reconnect_in: ms}); };
require("readline").createInterface({input: process.stdin}).on("line", (l) => {
  if (l === "drop") zs.ws.close();
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


@pytest.mark.skipif(not node_ok(), reason="needs node with --experimental-websocket")
def test_js_client_reconnects_and_resumes(demo, tmp_path):
    script = tmp_path / "client.js"
    script.write_text(NODE_SCRIPT)
    p = subprocess.Popen(["node", "--no-warnings", "--experimental-websocket", str(script),
                          CLIENT, "ws://127.0.0.1:%d/ws" % demo.port],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    buf = [b""]

    def next_line(what):
        while b"\n" not in buf[0]:
            ready, _, _ = select.select([p.stdout], [], [], TIMEOUT)
            assert ready, "the client said nothing for %s s while waiting for %s" % (TIMEOUT, what)
            chunk = os.read(p.stdout.fileno(), 4096)
            assert chunk, "node client ended while waiting for %s" % what
            buf[0] += chunk
        line, _, buf[0] = buf[0].partition(b"\n")
        return json.loads(line)

    def expect(pred, what):
        for _ in range(20):
            msg = next_line(what)
            if pred(msg):
                return msg
        raise AssertionError("no %s from the client" % what)

    def say(cmd):
        p.stdin.write(cmd + "\n")
        p.stdin.flush()
    try:
        expect(lambda m: m.get("state") == "open", "open")
        post_note(demo, "one")
        first = expect(lambda m: "event" in m, "event")
        assert first["data"] == {"text": "one"}
        say("drop")
        expect(lambda m: "reconnect_in" in m, "reconnect timer")
        post_note(demo, "two")   # published while the client is away
        post_note(demo, "three")
        say("go")
        expect(lambda m: m.get("state") == "open", "reopen")
        got = [expect(lambda m: "event" in m, "resumed event")["data"]["text"]
               for _ in range(2)]
        assert got == ["two", "three"]
        say("quit")
        assert p.wait(TIMEOUT) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


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
