"""Stand-in for ZPublisher.WSGIPublisher (see ../README.md)."""
import base64
import os
import threading
from urllib.parse import parse_qs

from zExceptions import BadRequest, NotFound

_lock = threading.Lock()
_folders = set()
_WEBDAV_SOURCE_PORT = 0
# A test's own WSGI app behind the publisher (test_webdav: davapp's echo),
# set by `delegate MODULE:ATTR` in the fake zope.conf or by a Paste factory.
delegate = None


def set_webdav_source_port(port):
    """As Zope 5.8's: requests whose SERVER_PORT is `port` are WebDAV source
    requests. Records the port in $ZF_TEST_MARKERS/zope-source-port."""
    global _WEBDAV_SOURCE_PORT
    _WEBDAV_SOURCE_PORT = port
    markers = os.environ.get("ZF_TEST_MARKERS")
    if markers:
        with open(os.path.join(markers, "zope-source-port"), "a") as f:
            f.write("%s\n" % port)


def _user(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth.startswith("Basic "):
        try:
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        if (name, password) == ("admin", "secret"):
            return name
    return None


def _ok(start_response, text, status="200 OK"):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def publish_module(environ, start_response):
    """Publishes the request like Zope 5.8's publish_module: HTTP errors
    leave as zExceptions exceptions (only the httpexceptions filter turns
    them into responses), and an authenticated user ends up in
    environ["REMOTE_USER"]."""
    try:
        server_port = int(environ["SERVER_PORT"])
    except (KeyError, ValueError):
        server_port = 0
    if _WEBDAV_SOURCE_PORT and _WEBDAV_SOURCE_PORT == server_port:
        # Zope's own source-port handling: mark, and GET -> manage_DAVget
        environ["WEBDAV_SOURCE_PORT"] = 1
        if environ["REQUEST_METHOD"].upper() == "GET":
            environ["PATH_INFO"] = "%s/manage_DAVget" % environ["PATH_INFO"]
    if delegate is not None:
        return delegate(environ, start_response)
    path = environ.get("PATH_INFO", "/")
    user = _user(environ)
    if user is not None:
        environ["REMOTE_USER"] = user
    if path == "/":
        return _ok(start_response, "Zope root\n")
    if path == "/whoami":
        return _ok(start_response, (user or "Anonymous User") + "\n")
    if path == "/boom":
        raise ValueError("fake Zope failed")
    if path == "/manage_addFolder":
        ids = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])
        new_id = ids[-1]
        with _lock:
            if not new_id or new_id in _folders:
                raise BadRequest("The id %r is invalid - it is already in use." % new_id)
            _folders.add(new_id)
        return _ok(start_response, "added %s\n" % new_id, "201 Created")
    with _lock:
        known = path.strip("/") in _folders
    if known:
        return _ok(start_response, "folder %s\n" % path.strip("/"))
    raise NotFound(path)
