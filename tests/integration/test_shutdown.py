"""Graceful shutdown: on SIGTERM/SIGINT the server stops accepting, lets the
request in flight finish, closes idle keep-alive connections and exits 0;
past --shutdown-timeout it exits anyway."""
import os
import signal
import socket

import pytest

from zftest import TIMEOUT, is_closed, read_head, read_response, wait_until


def refused(srv):
    """True when a new connection is not taken: refused, reset, or (on a
    loaded machine, while the listener goes away) never answered."""
    try:
        c = socket.create_connection(("127.0.0.1", srv.port), 1)
    except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
        return True
    c.close()
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_with_request_in_flight(server_factory, sig):
    srv = server_factory("--threads", "2", "--shutdown-timeout", "10s", name="shutdown")
    # an idle keep-alive connection that must not hold the shutdown up
    idle = srv.connect()
    idle_f = idle.makefile("rb")
    idle.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
    assert read_response(idle_f)[1] == b"Hello, world!"

    s = srv.connect(timeout=TIMEOUT)
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /sleep?s=2&started=slow-started HTTP/1.1\r\nHost: h\r\n\r\n")
        assert srv.wait_marker("slow-started"), "the slow request never reached the app"
        srv.signal(sig)
        assert wait_until(lambda: refused(srv), timeout=5), "still accepting after the signal"
        r, body = read_response(f)
        assert r.status == 200 and body == b"slept 2", "in-flight response not completed"
        assert is_closed(idle), "idle keep-alive connection left open during shutdown"
        assert srv.wait(15) == 0, "exit code %s\n%s" % (srv.returncode, srv.log()[-3000:])
    finally:
        f.close()
        s.close()
        idle_f.close()
        idle.close()


def test_shutdown_deadline(server_factory):
    """A request that outlives --shutdown-timeout does not keep the process
    alive: it exits on its own (not by our SIGKILL)."""
    srv = server_factory("--threads", "1", "--shutdown-timeout", "1s", name="shutdown-deadline")
    s = srv.connect(timeout=TIMEOUT)
    try:
        s.sendall(b"GET /sleep?s=60&started=stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        assert srv.wait_marker("stuck")
        srv.signal(signal.SIGTERM)
        code = srv.wait(15)
        assert code is not None, "process still running 15 s after SIGTERM with a 1s deadline"
        assert code >= 0, "process died from signal %d" % -code
        assert is_closed(s, timeout=5)
    finally:
        s.close()


def test_shutdown_when_idle(server_factory):
    srv = server_factory(name="shutdown-idle")
    assert srv.get("/hello")[2] == b"Hello, world!"
    srv.signal(signal.SIGTERM)
    assert srv.wait(15) == 0
    assert "Traceback" not in srv.log()


def test_queued_requests_get_503_with_connection_close(server_factory):
    """A graceful stop with the only worker stuck: the requests still queued
    half-way through shutdown_timeout get 503 + Connection: close (not a
    reset), never reach the app, and the process exits on its own."""
    srv = server_factory("--threads", "1", "--shutdown-timeout", "4s", "--queue-timeout", "0",
                         "--log-level", "debug", name="shutdown-queued")
    stuck = srv.connect(timeout=TIMEOUT)
    queued = []
    try:
        stuck.sendall(b"GET /sleep?s=60&started=stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        assert srv.wait_marker("stuck")
        for i in range(2):
            q = srv.connect(timeout=TIMEOUT)
            queued.append(q)
            q.sendall(b"GET /hello?queued=%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
            # the request is complete and handed to the pool
            assert srv.wait_log(r"GET /hello\?queued=%d HTTP/1.1" % i)
        srv.signal(signal.SIGTERM)
        for q in queued:
            f = q.makefile("rb")
            status, headers, _ = read_head(f)
            f.close()
            assert status == 503, status
            assert headers.get("connection") == "close", headers
            assert "retry-after" in headers, headers
            assert is_closed(q)
        code = srv.wait(20)
        assert code is not None and code >= 0, (code, srv.log()[-3000:])
        assert not [c for c in srv.calls() if "queued=" in c], srv.calls()
        assert is_closed(stuck, timeout=5)
    finally:
        for q in queued:
            q.close()
        stuck.close()


def test_stop_takes_one_shutdown_timeout_not_two(server_factory):
    """The deadline counts from the signal: a request that needs 1.5x the
    shutdown timeout is not waited for (it used to be: the workers got a
    second full timeout after the connections were closed)."""
    srv = server_factory("--threads", "1", "--shutdown-timeout", "3s", name="shutdown-once")
    s = srv.connect(timeout=TIMEOUT)
    try:
        s.sendall(b"GET /sleep?s=5.5&started=slow&finished=slow-done HTTP/1.1\r\nHost: h\r\n\r\n")
        assert srv.wait_marker("slow")
        srv.signal(signal.SIGTERM)
        code = srv.wait(20)
        assert code is not None and code >= 0, code
        assert not os.path.exists(srv.marker("slow-done")), \
            "the server waited for the request past its shutdown timeout\n" + srv.log()[-2000:]
        assert "still busy at the stop deadline" in srv.log()
    finally:
        s.close()


def test_second_signal_stops_at_once(server_factory):
    """A second SIGTERM during a graceful stop exits now, even with a worker
    stuck in the application (which cannot be joined)."""
    srv = server_factory("--threads", "1", "--shutdown-timeout", "120s", name="shutdown-twice")
    s = srv.connect(timeout=TIMEOUT)
    try:
        s.sendall(b"GET /sleep?s=120&started=stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        assert srv.wait_marker("stuck")
        srv.signal(signal.SIGTERM)
        assert srv.wait_log("shutting down gracefully")
        srv.signal(signal.SIGTERM)
        code = srv.wait(20)
        assert code is not None, "still running 20 s after a second SIGTERM"
        assert code >= 0, "died from signal %d" % -code
        assert "received again: stopping now" in srv.log()
        assert is_closed(s, timeout=5)
    finally:
        s.close()
