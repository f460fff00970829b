"""WSGI test app for test_webdav.py: answers every request with JSON that
says what it got (method, path, query, the HTTP_* headers, the body's
length and sha256, zfront.channel, WEBDAV_SOURCE_PORT, SERVER_PORT), so
the tests can check what zfront passed on.

Special paths:
  /gone/...           404, after writing "NotFound: PATH" to wsgi.errors
                      (as apps that log their 404s do); so do macOS probe
                      names (._x, .DS_Store)
  /options-dav        OPTIONS: Allow lists PROPFIND and LOCK, no DAV header
  /options-dav1       OPTIONS: Allow lists PROPFIND only
  /options-plain      OPTIONS: Allow without DAV methods
  /options-own        OPTIONS: the app sets DAV and MS-Author-Via itself
  /slow               touches $ZF_TEST_MARKERS/slow-started, sleeps 1 s,
                      then echoes
  /big/SIZE           GET: SIZE bytes of $ZF_TEST_DATA/big-SIZE (made on
                      first use) through wsgi.file_wrapper
Any PATH_INFO that does not start with "/" ("*"), and "/" itself, get
404: the app serves only its tree below the root. Every request body is read in 1 MiB pieces (never whole)
and a line "METHOD PATH LENGTH SHA256" appended to
$ZF_TEST_MARKERS/calls.log.
"""
import hashlib
import json
import os
import time

PROBES = (".DS_Store",)


def big_file(size):
    path = os.path.join(os.environ["ZF_TEST_DATA"], "big-%d" % size)
    if not os.path.exists(path):
        block = bytes(range(256)) * 4096  # 1 MiB
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            left = size
            i = 0
            while left:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
                i += 1
        os.rename(tmp, path)
    return path


def respond(start_response, status, body=b"", headers=()):
    hdrs = [("Content-Length", str(len(body)))] + list(headers)
    start_response(status, hdrs)
    return [body]


def application(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ["PATH_INFO"]
    h = hashlib.sha256()
    n = 0
    inp = environ["wsgi.input"]
    while True:
        b = inp.read(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    markers = os.environ.get("ZF_TEST_MARKERS")
    if markers:
        with open(os.path.join(markers, "calls.log"), "a") as f:
            f.write("%s %s %d %s\n" % (method, path, n, h.hexdigest()))
    if path == "/slow" and markers:
        open(os.path.join(markers, "slow-started"), "w").close()
        time.sleep(1.0)
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if not path.startswith("/") or path == "/" or path.startswith("/gone/") or last.startswith("._") \
            or last in PROBES:
        environ["wsgi.errors"].write("NotFound: %s\n" % path)
        return respond(start_response, "404 Not Found", b"not found\n")
    if method == "OPTIONS":
        allow = {
            "/options-dav": "OPTIONS, GET, PUT, PROPFIND, PROPPATCH, MKCOL, LOCK, UNLOCK",
            "/options-dav1": "OPTIONS, GET, PROPFIND",
            "/options-plain": "OPTIONS, GET, HEAD, POST",
            "/options-own": "OPTIONS, GET, PROPFIND, LOCK",
        }.get(path)
        if allow:
            extra = [("Allow", allow)]
            if path == "/options-own":
                extra += [("DAV", "1"), ("MS-Author-Via", "app")]
            return respond(start_response, "200 OK", b"", extra)
    if method in ("GET", "HEAD") and path.startswith("/big/"):
        size = int(path[5:])
        f = open(big_file(size), "rb")
        start_response("200 OK", [("Content-Length", str(size)),
                                  ("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 1 << 20)
    info = {
        "method": method,
        "path": path,
        "query": environ.get("QUERY_STRING"),
        "uri": environ.get("REQUEST_URI"),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "content_length": environ.get("CONTENT_LENGTH"),
        "length": n,
        "sha256": h.hexdigest(),
        "channel": environ.get("zfront.channel"),
        "source": environ.get("WEBDAV_SOURCE_PORT"),
        "server_port": environ.get("SERVER_PORT"),
        "scheme": environ.get("wsgi.url_scheme"),
    }
    body = json.dumps(info, sort_keys=True).encode()
    return respond(start_response, "200 OK", body, [("Content-Type", "application/json")])


def make_zope_app(global_conf, **local_conf):
    """PasteDeploy factory for the fake-Zope test: the fake
    ZPublisher.WSGIPublisher.publish_module in front of this app."""
    from ZPublisher import WSGIPublisher
    WSGIPublisher.delegate = application
    return WSGIPublisher.publish_module
