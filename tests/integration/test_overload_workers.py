"""Worker saturation: with every worker busy in the application, requests
beyond server.max_queued, and requests that waited past server.queue_timeout,
are answered 503 with Retry-After by the server itself (the application never
sees them); a worker busy past server.stuck_after is logged once with its
Python stack."""
import os
import socket
import struct
import threading
import time

import pytest

from zftest import TIMEOUT, read_response, wait_until


def _busy(srv, seconds, name):
    """Occupies the only worker with a sleeping request; returns (sock, rfile)
    and the path of the marker written when the sleep ends."""
    s = srv.connect(timeout=TIMEOUT)
    s.sendall(b"GET /sleep?s=%g&started=%s-started&finished=%s-done HTTP/1.1\r\n"
              b"Host: h\r\n\r\n" % (seconds, name.encode(), name.encode()))
    assert srv.wait_marker(name + "-started"), "the sleeping request never reached the app"
    return s, s.makefile("rb"), srv.marker(name + "-done")


def _fetch(srv, path, done_marker, out, i):
    """One GET on its own connection; records (status, headers, body, whether
    the busy request had finished when this answer arrived)."""
    s = srv.connect(timeout=TIMEOUT)
    f = s.makefile("rb")
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path.encode())
        r, body = read_response(f)
        out[i] = (r.status, r.headers, body, os.path.exists(done_marker))
    finally:
        f.close()
        s.close()


def test_queue_full_gets_503_at_once(server_factory):
    srv = server_factory("--threads", "1", "--max-queued", "2", "--queue-timeout", "0",
                         name="max-queued")
    s, f, done = _busy(srv, 5, "busy")
    try:
        n = 5  # 2 fit in the queue, 3 do not
        out = [None] * n
        threads = [threading.Thread(target=_fetch, args=(srv, "/hello?n=%d" % i, done, out, i))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT + 10)
        assert all(o is not None for o in out), out
        refused = [o for o in out if o[0] == 503]
        served = [o for o in out if o[0] == 200]
        assert len(refused) == 3 and len(served) == 2, [o[0] for o in out]
        for status, headers, body, busy_done in refused:
            assert headers["Retry-After"].isdigit(), headers
            assert b"busy" in body
            assert not busy_done, "the 503 waited for the busy worker"
        for status, headers, body, busy_done in served:
            assert body == b"Hello, world!"
        r, body = read_response(f)
        assert r.status == 200
        # only the two admitted requests reached the application
        hellos = [c for c in srv.calls() if c.startswith("GET /hello")]
        assert len(hellos) == 2, srv.calls()
        assert srv.wait_log(r"server\.max_queued"), srv.log()[-2000:]
    finally:
        f.close()
        s.close()


def test_queue_timeout_gets_503_and_never_runs(server_factory):
    srv = server_factory("--threads", "1", "--queue-timeout", "1s", name="queue-timeout")
    s, f, done = _busy(srv, 4, "busy")
    try:
        out = [None]
        _fetch(srv, "/hello?late=1", done, out, 0)
        status, headers, body, busy_done = out[0]
        assert status == 503, out[0]
        assert headers["Retry-After"].isdigit()
        assert not busy_done, "the queued request was only answered when the worker freed up"
        r, body = read_response(f)
        assert r.status == 200 and body == b"slept 4"
        assert srv.wait_marker("busy-done")
        assert not [c for c in srv.calls() if "late=1" in c], srv.calls()
        assert srv.wait_log(r"waited [0-9.]+ s for a worker \(server\.queue_timeout"), \
            srv.log()[-2000:]
        # a request that does not wait is served as usual
        assert srv.get("/hello")[0] == 200
    finally:
        f.close()
        s.close()


def test_stuck_worker_logged_once_with_its_stack(server_factory):
    srv = server_factory("--threads", "1", "--stuck-after", "300ms", name="stuck")
    s, f, done = _busy(srv, 3, "busy")
    try:
        assert srv.wait_log(r"busy on one request"), srv.log()[-2000:]
        r, body = read_response(f)
        assert r.status == 200
        # the next request is not stuck: still reported only once
        assert srv.get("/hello")[0] == 200
        log = srv.log()
        assert log.count("busy on one request") == 1, log[-3000:]
        at = log.index("busy on one request")
        stack = log[at:at + 3000]
        assert "r_sleep" in stack and "time.sleep" in stack, stack
    finally:
        f.close()
        s.close()


def test_queue_full_over_http2(server_factory):
    """One HTTP/2 connection can queue many streams: the ones beyond
    max_queued get the core's 503 as an ordinary HTTP/2 response."""
    from test_h2 import H2Conn

    srv = server_factory("--threads", "1", "--max-queued", "2", "--queue-timeout", "0",
                         name="max-queued-h2")
    c = H2Conn(srv.port)
    try:
        busy = c.request("/sleep?s=4&started=busy-started&finished=busy-done")
        assert srv.wait_marker("busy-started")
        sids = [c.request("/hello?n=%d" % i) for i in range(5)]
        # the refused streams end while the worker still sleeps
        refused = sids[2:]
        assert c.pump(lambda: all(c.done(s) for s in refused)), c.events[-10:]
        assert not os.path.exists(srv.marker("busy-done")), "the 503s waited for the worker"
        for s in refused:
            st = c.streams[s]
            assert st["status"] == 503 and st["headers"]["retry-after"].isdigit(), st
            assert b"busy" in bytes(st["data"])
        for s in sids[:2] + [busy]:
            assert c.wait(s)["status"] == 200
        assert len([x for x in srv.calls() if x.startswith("GET /hello")]) == 2, srv.calls()
    finally:
        c.close()



def test_client_gone_while_queued_is_dropped_quietly(server_factory):
    """A queued request whose client left (here: an HTTP/2 stream reset) is
    neither run nor answered 503 (nor logged as one) when its wait runs out."""
    from test_h2 import H2Conn

    srv = server_factory("--threads", "1", "--queue-timeout", "1500ms", name="queue-gone")
    c = H2Conn(srv.port)
    try:
        busy = c.request("/sleep?s=4&started=busy-started")
        assert srv.wait_marker("busy-started")
        gone = c.request("/hello?gone=1")
        c.conn.reset_stream(gone)
        c.flush()
        kept = c.request("/hello?kept=1")
        assert c.wait(kept)["status"] == 503
        assert c.wait(busy)["status"] == 200
        log = srv.log()
        assert "kept=1 waited" in log, log[-2000:]
        assert "gone=1 waited" not in log, log[-2000:]
        assert not [x for x in srv.calls() if "gone=1" in x or "kept=1" in x], srv.calls()
    finally:
        c.close()


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_http1_client_gone_while_queued_is_dropped_unrun(server_factory, how):
    """--threads 1 --max-queued 1: while one request sleeps in the app, a
    second one waits in the queue. A client that resets its connection
    meanwhile is gone: its request leaves the queue at once, unrun, so the
    queue slot is free for the next request (not 503 for a dead one). A
    client that only half-closes (FIN after its request) still gets its
    answer: the request runs."""
    srv = server_factory("--threads", "1", "--max-queued", "1", "--log-level", "debug",
                         name="h1-queue-gone-" + how)
    busy = socket.create_connection(("127.0.0.1", srv.port), TIMEOUT)
    try:
        busy.sendall(b"GET /sleep?s=2&started=busy-started HTTP/1.1\r\nHost: t\r\n\r\n")
        assert srv.wait_marker("busy-started")
        q = socket.create_connection(("127.0.0.1", srv.port), TIMEOUT)
        q.settimeout(TIMEOUT)
        q.sendall(b"GET /hello?queued=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert srv.wait_log(r"GET /hello\?queued=1 HTTP/1\.1, while waiting for the application")
        if how == "reset":
            q.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            q.close()
            assert srv.wait_log(r"GET /hello\?queued=1: client gone while queued: dropped unrun")
            # the slot is free while the first request still sleeps
            status, _, body = srv.get("/hello?after=1")
            assert status == 200, body
        else:
            q.shutdown(socket.SHUT_WR)
        busy.settimeout(TIMEOUT)
        assert busy.recv(12).startswith(b"HTTP/1.1 200")
        if how == "fin":
            got = b""
            while b"Hello, world!" not in got:
                b = q.recv(4096)
                if not b:
                    break
                got += b
            q.close()
            assert got.startswith(b"HTTP/1.1 200"), got
            assert [x for x in srv.calls() if "queued=1" in x], srv.calls()
        else:
            assert [x for x in srv.calls() if "after=1" in x], srv.calls()
            assert not [x for x in srv.calls() if "queued=1" in x], srv.calls()
    finally:
        busy.close()
