"""The demo site's live notifications (WebSocket, docs/protocols/websocket.md).

- ``/ws``: the handshake (GET, or CONNECT over HTTP/2: RFC 8441, what a
  browser does on wss:// when the https listener speaks h2). zfront passes it to the app with
  ``zfront.channel == "websocket"``; the demo lets everyone subscribe to
  ``demo/`` topics and publish on ``demo/chat`` (a real site would check the
  user here, as for any page).
- ``/live``: a page that subscribes to ``demo/notes``, ``demo/chat`` and
  ``demo/content`` (every successful WebDAV change of the content: PUT,
  DELETE, MKCOL, COPY, MOVE; published by zfront.demo.DemoApp) with the
  bundled client and lists what arrives.
- ``/live/note``: POST ``text=...`` publishes a note with ``zfront.publish``
  (what an edit of content would do).
- ``/zfront-ws.js``: the JavaScript client (python/zfront/static/).
"""

import html
import os
from urllib.parse import parse_qs

CLIENT_JS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static",
                         "zfront-ws.js")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>zfront demo: live notifications</title>
<style>
body { font-family: sans-serif; max-width: 44em; margin: 2em auto; line-height: 1.5; }
#state { color: #666; }
#events li { margin: .2em 0; }
</style></head>
<body>
<h1>Live notifications</h1>
<p>Connection: <span id="state">starting</span></p>
<form id="note" method="post" action="/live/note">
<input name="text" placeholder="a note for every open page">
<button type="submit">Publish</button>
</form>
<p>Or from a shell: <code>curl -d text=hello http://HOST/live/note</code></p>
<ul id="events"></ul>
<script src="/zfront-ws.js"></script>
<script>
var list = document.getElementById("events");
function show(text, cls) {
  var li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  list.insertBefore(li, list.firstChild);
}
var zs = new ZfrontSocket("/ws", {
  onState: function (s) { document.getElementById("state").textContent = s; },
  onEvent: function (topic, data) { show(topic + ": " + (data && data.text || JSON.stringify(data)), "event"); },
  onGap: function (topic) { show(topic + ": some notifications were missed", "gap"); }
});
zs.subscribe("demo/notes");
zs.subscribe("demo/chat");
zs.subscribe("demo/content");
document.getElementById("note").onsubmit = function (e) {
  e.preventDefault();
  var text = this.elements.text.value;
  fetch("/live/note", {method: "POST", body: new URLSearchParams({text: text})});
  this.elements.text.value = "";
};
</script>
</body>
</html>
"""


def _answer(start_response, status, body, ctype="text/plain; charset=utf-8", extra=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))]
                   + list(extra))
    return [body]


def handshake(environ, start_response):
    if environ.get("zfront.channel") != "websocket":
        return _answer(start_response, "400 Bad Request", "WebSocket only\n")
    return _answer(start_response, "200 OK", "", extra=[
        ("Zfront-Topics", "demo/"), ("Zfront-Publish", "demo/chat")])


def page(environ, start_response):
    return _answer(start_response, "200 OK", PAGE, "text/html; charset=utf-8")


def note(environ, start_response):
    import zfront

    n = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(n).decode("utf-8", "replace"))
    text = (form.get("text") or [""])[-1][:500]
    if not text:
        return _answer(start_response, "400 Bad Request", "text is empty\n")
    zfront.publish("demo/notes", {"text": text})
    return _answer(start_response, "200 OK", "published: %s\n" % html.escape(text))


def client_js(environ, start_response):
    with open(CLIENT_JS, "rb") as f:
        body = f.read()
    return _answer(start_response, "200 OK", body, "text/javascript; charset=utf-8")


def routes():
    """The demo's routes for these pages: path -> (handler, methods)."""
    return {
        # GET over HTTP/1.1; over HTTP/2 (RFC 8441) the handshake is a CONNECT
        "/ws": (handshake, ("GET", "CONNECT")),
        "/live": (page, ("GET", "HEAD")),
        "/live/note": (note, ("POST",)),
        "/zfront-ws.js": (client_js, ("GET", "HEAD")),
    }


__all__ = ["routes", "CLIENT_JS"]
