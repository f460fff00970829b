"""zfront's bundled demo site: ``zfront --demo`` (or ``zfront.demo:application``).

A small but real WSGI site that shows what the server does:

  /               an HTML page linking the rest, with the content listed
  /hello          exactly b"Hello, world!" (text/plain)
  /files/big.bin  a large file (64 MiB by default) sent through
                  wsgi.file_wrapper: the event loop streams it with sendfile,
                  Range requests are answered 206 (Accept-Ranges: bytes)
  /upload         GET: a form; POST: the body's size and sha256
  /environ        the WSGI environ, as text
  everything else the content store: the folder <state>/content served as
                  pages (a folder shows its index.html, else a listing) and
                  editable over WebDAV class 1 and 2 (zfront.demo.dav) --
                  OPTIONS, PROPFIND, PUT, MKCOL, COPY, MOVE, LOCK, ...;
                  a change that succeeds (PUT, DELETE, MKCOL, COPY, MOVE)
                  is published on the topic demo/content (/live shows it)

The content is plain files: an edit over WebDAV changes the site. A file
named index.html at the top of the content replaces the generated home page.
Dead properties and locks are kept in <state>/dav.sqlite.

big.bin is created once, as <state>/content/files/big.bin. Its content is
deterministic: block i (64 KiB each, the last one cut) is
``hashlib.shake_256(b"zfront-demo:%d" % i).digest(65536)`` -- see
``expected_bytes`` -- so a client can check any range of it. Its size comes
from ``make_app(big_size=...)``, else the environment variable
ZFRONT_DEMO_BIG_SIZE (bytes, or with a k/m/g suffix), else 64 MiB. The
largest XML body a WebDAV request may carry is ZFRONT_DEMO_DAV_MAX_XML
(bytes, k/m/g suffix; 1 MiB by default).
"""

import hashlib
import html
import os
import threading

from .dav import DEFAULT_MAX_XML, DavApp, render_listing
from .store import Store

__all__ = ["make_app", "application", "expected_bytes", "DemoApp"]

DEFAULT_STATE_DIR = "var/zfront-demo"
DEFAULT_BIG_SIZE = 64 * 1024 * 1024
BLOCK = 64 * 1024
READ_SIZE = 64 * 1024


def _block(index):
    return hashlib.shake_256(b"zfront-demo:%d" % index).digest(BLOCK)


def expected_bytes(offset, length):
    """The bytes of big.bin at [offset, offset + length)."""
    out = bytearray()
    index, skip = divmod(offset, BLOCK)
    while len(out) < length:
        out += _block(index)[skip:]
        index += 1
        skip = 0
    return bytes(out[:length])


def _parse_size(text):
    text = text.strip().lower()
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1:], 1)
    if mult != 1:
        text = text[:-1]
    return int(text) * mult


def _ensure_big_file(path, size):
    """Creates path with `size` deterministic bytes unless it is already
    there with that size. Written to a temp name, then renamed."""
    try:
        if os.path.getsize(path) == size:
            return
    except OSError:
        pass
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        index = 0
        left = size
        while left > 0:
            data = _block(index)[:left]
            f.write(data)
            left -= len(data)
            index += 1
    os.replace(tmp, path)


def _text(start_response, status, body, ctype="text/plain; charset=utf-8", extra=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    start_response(status, headers)
    return [body]


PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>zfront demo</title>
<style>
body {{ font-family: sans-serif; max-width: 44em; margin: 2em auto; line-height: 1.5; }}
code {{ background: #f3f3f3; padding: 0 .2em; }}
</style></head>
<body>
<h1>zfront is running</h1>
<p>This is the demo site bundled with zfront {version}, a multi-protocol front-end
server for Zope and any WSGI application. Served over
<code>{scheme}</code> ({protocol}) by a worker thread of the embedded Python.</p>
<ul>
<li><a href="/hello">/hello</a> &mdash; the smallest page</li>
<li><a href="/files/big.bin">/files/big.bin</a> &mdash; a {big_mib} MiB file, streamed by the
event loop with sendfile (try <code>curl -r 0-99</code>)</li>
<li><a href="/upload">/upload</a> &mdash; send a file, get its size and sha256</li>
<li><a href="/environ">/environ</a> &mdash; the WSGI environ of your request</li>
<li><a href="/live">/live</a> &mdash; live notifications over WebSocket</li>
</ul>
<h2>Content</h2>
<p>The folder <code>content</code> of the state directory, editable over WebDAV
at this address (try <code>cadaver {base}</code>; a file <code>index.html</code> here
replaces this page):</p>
<ul>
{content}
</ul>
</body>
</html>
"""

UPLOAD_FORM = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>zfront demo: upload</title></head>
<body>
<h1>Upload</h1>
<p>The server answers with the size and sha256 of the request body as it arrived
(for a form, that is the multipart encoding around your file).</p>
<form method="post" action="/upload" enctype="multipart/form-data">
<input type="file" name="file"> <button type="submit">Send</button>
</form>
<p>Or: <code>curl --data-binary @FILE http://HOST/upload</code></p>
</body>
</html>
"""


class DemoApp:
    """The demo site as a WSGI callable."""

    def __init__(self, state_dir=DEFAULT_STATE_DIR, big_size=None):
        if big_size is None:
            env = os.environ.get("ZFRONT_DEMO_BIG_SIZE")
            big_size = _parse_size(env) if env else DEFAULT_BIG_SIZE
        self.state_dir = os.path.abspath(state_dir)
        self.big_size = big_size
        self.content_dir = os.path.join(self.state_dir, "content")
        self.big_path = os.path.join(self.content_dir, "files", "big.bin")
        os.makedirs(os.path.dirname(self.big_path), exist_ok=True)
        _ensure_big_file(self.big_path, big_size)
        self.store = Store(self.content_dir, os.path.join(self.state_dir, "dav.sqlite"),
                           os.path.join(self.state_dir, "dav-tmp"))
        env = os.environ.get("ZFRONT_DEMO_DAV_MAX_XML")
        self.dav = DavApp(self.store, _parse_size(env) if env else DEFAULT_MAX_XML)
        # pages made by code; every other path is the content store
        self.routes = {
            "/hello": (self.hello, ("GET", "HEAD")),
            "/upload": (self.upload, ("GET", "HEAD", "POST")),
            "/environ": (self.show_environ, ("GET", "HEAD", "POST")),
        }
        from . import live  # live notifications: /live, /ws, /zfront-ws.js

        self.routes.update(live.routes())

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        method = environ["REQUEST_METHOD"]
        if path == "/" and method in ("GET", "HEAD"):
            return self.index(environ, start_response)
        route = self.routes.get(path)
        if route is None or method in ("OPTIONS", "PROPFIND"):
            if method in CONTENT_CHANGES:
                return self.dav_and_announce(environ, start_response)
            return self.dav(environ, start_response)
        handler, methods = route
        if method not in methods:
            return _text(
                start_response,
                "405 Method Not Allowed",
                f"{environ['REQUEST_METHOD']} is not allowed here\n",
                extra=[("Allow", ", ".join(methods))],
            )
        return handler(environ, start_response)

    def dav_and_announce(self, environ, start_response):
        """A WebDAV request that may change the content; when it succeeds
        (2xx), every open /live page is told on the topic demo/content."""
        status = []

        def start(st, headers, exc_info=None):
            status[:] = [st]
            return start_response(st, headers, exc_info)

        body = self.dav(environ, start)
        if status and status[0][:1] == "2":
            method = environ["REQUEST_METHOD"]
            path = environ.get("PATH_INFO") or "/"
            event = {"action": method, "path": path, "status": status[0][:3]}
            text = "%s %s" % (method, path)
            dest = environ.get("HTTP_DESTINATION")
            if method in ("COPY", "MOVE") and dest:
                event["destination"] = dest
                text += " -> " + dest
            event["text"] = "content changed: " + text
            _publish("demo/content", event)
        return body

    def index(self, environ, start_response):
        """The home page: the content's index.html if there is one, else the
        generated page with the content listed."""
        from zfront import __version__

        from .dav import Request, is_dir

        req = Request(environ, self.dav)
        st = self.store.stat(("index.html",))
        if st is not None and not is_dir(st):
            return self.dav.send_file(req, start_response, ("index.html",), st)
        listing = render_listing(self.dav, req, ())
        content = listing[listing.index("<ul>") + 5:listing.index("</ul>")]
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
        page = PAGE.format(
            base=html.escape("%s://%s/" % (environ.get("wsgi.url_scheme", "http"), host)),
            content=content,
            version=html.escape(__version__),
            scheme=html.escape(environ.get("wsgi.url_scheme", "http")),
            protocol=html.escape(environ.get("SERVER_PROTOCOL", "")),
            big_mib=round(self.big_size / 1024 / 1024, 1),
        )
        return _text(start_response, "200 OK", page, "text/html; charset=utf-8")

    def hello(self, environ, start_response):
        return _text(start_response, "200 OK", b"Hello, world!")

    def upload(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST":
            return _text(start_response, "200 OK", UPLOAD_FORM, "text/html; charset=utf-8")
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        size = 0
        while True:
            data = stream.read(READ_SIZE)
            if not data:
                break
            digest.update(data)
            size += len(data)
        return _text(start_response, "200 OK", f"size: {size}\nsha256: {digest.hexdigest()}\n")

    def show_environ(self, environ, start_response):
        lines = [f"{key}: {environ[key]!r}" for key in sorted(environ)]
        return _text(start_response, "200 OK", "\n".join(lines) + "\n")


# WebDAV methods that change the content (announced on demo/content)
CONTENT_CHANGES = ("PUT", "DELETE", "MKCOL", "COPY", "MOVE")


def _publish(topic, data):
    """zfront.publish when the demo runs inside zfront with its WebSocket
    module; a no-op under another WSGI server."""
    try:
        import zfront
    except ImportError:
        return
    publish = getattr(zfront, "publish", None)
    if publish is not None:
        publish(topic, data)


def make_app(state_dir=DEFAULT_STATE_DIR, big_size=None):
    """Returns the demo WSGI application keeping its files in state_dir."""
    return DemoApp(state_dir, big_size)


_default_app = None
_default_lock = threading.Lock()


def application(environ, start_response):
    """The demo with its files in ./var/zfront-demo, created on first use."""
    global _default_app
    if _default_app is None:
        with _default_lock:
            if _default_app is None:
                _default_app = make_app(DEFAULT_STATE_DIR)
    return _default_app(environ, start_response)
