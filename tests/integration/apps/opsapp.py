"""The WSGI application of the operations tests (clock, tasks, signals,
memory): every call is appended to $ZF_TEST_MARKERS/ops.log as one JSON line
(channel, method, path, query, Authorization, body, start and end times), so
a test can see what reached the app, on which channel, and when.

Paths: /slow?s=SECONDS sleeps (its query is appended to started.log
first); /status?code=N answers N; /big?n=BYTES
returns a generated body in 64 KiB pieces; /enqueue queues tasks with
zfront.enqueue (see r_enqueue); /thread-enqueue queues from a new thread
outside any request. Test code only.
"""
import json
import os
import threading
import time
from urllib.parse import parse_qs

_lock = threading.Lock()


def _record(**kw):
    with _lock:
        with open(os.path.join(os.environ["ZF_TEST_MARKERS"], "ops.log"), "a") as f:
            f.write(json.dumps(kw) + "\n")


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def r_enqueue(environ, q):
    """?n=COUNT&queue=NAME&path=/PATH&sleep=S: queues COUNT POST tasks to
    PATH?i=INDEX with a body and a header, then sleeps S seconds before the
    request ends (a task must not run before that)."""
    import zfront

    for i in range(int(q.get("n", "1"))):
        target = q.get("path", "/slow")
        zfront.enqueue("POST", "%s%si=%d" % (target, "&" if "?" in target else "?", i),
                       headers={"X-Task": "t%d" % i, "Content-Type": "text/plain"},
                       body=b"payload %d" % i, queue=q.get("queue", "default"))
    time.sleep(float(q.get("sleep", "0")))


def application(environ, start_response):
    start = time.time()
    q = _q(environ)
    path = environ.get("PATH_INFO", "")
    body = environ["wsgi.input"].read()
    status = "200 OK"
    out = b"ok\n"
    if path == "/slow":
        with _lock:
            with open(os.path.join(os.environ["ZF_TEST_MARKERS"], "started.log"), "a") as f:
                f.write(environ.get("QUERY_STRING", "") + "\n")
        time.sleep(float(q.get("s", "0")))
    elif path == "/status":
        status = "%s Status" % q.get("code", "200")
    elif path == "/enqueue":
        r_enqueue(environ, q)
    elif path == "/thread-enqueue":
        import zfront

        t = threading.Thread(target=zfront.enqueue, args=("GET", "/slow?from=thread"))
        t.start()
        t.join()
    elif path == "/enqueue-bad":
        import zfront

        errors = []
        for args, kw in [(("get", "/x"), {}), (("GET", "x"), {}), (("GET", "/a b"), {}),
                         (("GET", "/x"), {"headers": {"Bad:Name": "v"}}),
                         (("GET", "/x"), {"headers": {"X": "a\r\nInjected: 1"}}),
                         (("GET", "/x"), {"headers": {"X": 1}}),
                         (("GET", "/x"), {"body": 12})]:
            try:
                zfront.enqueue(*args, **kw)
                errors.append("accepted")
            except (TypeError, ValueError) as e:
                errors.append(type(e).__name__)
        out = (" ".join(errors) + "\n").encode()
    elif path == "/big":
        n = int(q.get("n", "1048576"))
        piece = b"x" * 65536

        def gen():
            left = n
            while left > 0:
                yield piece[:left]
                left -= len(piece)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return gen()
    _record(channel=environ.get("zfront.channel"), method=environ["REQUEST_METHOD"],
            path=path, query=environ.get("QUERY_STRING", ""),
            auth=environ.get("HTTP_AUTHORIZATION"), host=environ.get("HTTP_HOST"),
            task=environ.get("HTTP_X_TASK"), body=body.decode("latin-1"),
            start=start, end=time.time())
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def make_paste_app(global_conf, **local_conf):
    """PasteDeploy factory (test_plone_ini): answers the environ keys the
    [server:main] options change, as JSON."""
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        out = json.dumps({k: environ.get(k) for k in (
            "wsgi.url_scheme", "REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
            "HTTP_FORWARDED", "HTTP_HOST")} | {"body": len(body)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    return app
