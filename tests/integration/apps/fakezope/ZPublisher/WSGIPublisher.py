"""Stand-in for ZPublisher.WSGIPublisher (see ../README.md)."""
import base64
import threading
from urllib.parse import parse_qs

from zExceptions import BadRequest, NotFound

_lock = threading.Lock()
_folders = set()


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
