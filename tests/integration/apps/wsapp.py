"""The WSGI application of the WebSocket tests (test_ws*.py).

- GET /ws (zfront.channel=websocket): the handshake authorisation. The user
  comes from the query (?user=NAME, standing in for a cookie or a token):
  none -> 401, "mallory" -> 403, "bob" -> 200 with topics "news/" and
  "private/bob", publish on "chat/", audience "user:bob"; "ed" -> 200 with
  topics "news/" and "docs/*", audience "role:Editor". A handshake that does
  not arrive with channel websocket gets 500, so a granted test proves it.
- POST /wsmsg: a client message passed on by zfront (ws.app_path): echoes it
  with what the environ says (topic, channel, the handshake's query); data
  "fail" gets a 409 with a text body. Bob may send on "app/".
- POST /publish?topic=T[&aud=a,b][&thread=1]: zfront.publish(T, json body).
- Every call is appended to $ZF_TEST_MARKERS/calls.log ("METHOD PATH?QUERY").
- A zfront.subscribe listener on "listen/*" appends "TOPIC DATA-as-JSON" to
  $ZF_TEST_MARKERS/listened.log (it runs on a worker thread).
"""
import json
import os
import threading
from urllib.parse import parse_qs

import zfront


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _answer(start_response, status, body=b"", headers=()):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))] + list(headers))
    return [body]


def _on_listen(topic, data):
    path = os.path.join(os.environ.get("ZF_TEST_MARKERS", "/nonexistent"), "listened.log")
    with open(path, "a") as f:
        f.write("%s %s %s\n" % (topic, json.dumps(data, sort_keys=True),
                                threading.current_thread().name))


zfront.subscribe("listen/*", _on_listen)


def handshake(environ, start_response):
    if environ.get("zfront.channel") != "websocket":
        return _answer(start_response, "500 Internal Server Error", b"not a websocket channel")
    user = _q(environ).get("user")
    if not user:
        return _answer(start_response, "401 Unauthorized", b"log in first",
                       [("WWW-Authenticate", 'Basic realm="zope"')])
    if user == "mallory":
        return _answer(start_response, "403 Forbidden", b"no notifications for you")
    if user == "ed":
        return _answer(start_response, "200 OK", b"", [
            ("Zfront-Topics", "news/ docs/*"), ("Zfront-Audience", "role:Editor")])
    return _answer(start_response, "200 OK", b"", [
        ("Zfront-Topics", "news/ private/%s" % user), ("Zfront-Publish", "chat/"),
        ("Zfront-Send", "app/"),
        ("Zfront-Audience", "user:%s" % user)])


def publish(environ, start_response):
    q = _q(environ)
    n = int(environ.get("CONTENT_LENGTH") or 0)
    data = json.loads(environ["wsgi.input"].read(n) or b"null")
    aud = q["aud"].split(",") if q.get("aud") else None
    if q.get("thread"):
        t = threading.Thread(target=zfront.publish, args=(q["topic"], data, aud))
        t.start()
        t.join()
        ok = True
    else:
        ok = zfront.publish(q["topic"], data, audience=aud)
    return _answer(start_response, "200 OK", b"ok" if ok else b"not queued")


def ws_message(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    data = json.loads(environ["wsgi.input"].read(n))
    if data == "fail":
        return _answer(start_response, "409 Conflict", b"not like that")
    body = json.dumps({"echo": data, "topic": environ.get("HTTP_ZFRONT_TOPIC"),
                       "channel": environ.get("zfront.channel"),
                       "method": environ["REQUEST_METHOD"],
                       "user": _q(environ).get("user"),
                       "ctype": environ.get("CONTENT_TYPE"),
                       "cookie": environ.get("HTTP_COOKIE")}).encode()
    return _answer(start_response, "200 OK", body, [("Content-Type", "application/json")])


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    with open(os.path.join(os.environ.get("ZF_TEST_MARKERS", "/nonexistent"), "calls.log"),
              "a") as f:
        f.write("%s %s?%s\n" % (environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING")))
    if path == "/ws":
        return handshake(environ, start_response)
    if path == "/wsmsg":
        return ws_message(environ, start_response)
    if path == "/publish":
        return publish(environ, start_response)
    return _answer(start_response, "404 Not Found", b"no route")
