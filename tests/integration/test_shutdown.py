"""Graceful shutdown: on SIGTERM/SIGINT the server stops accepting, lets the
request in flight finish, closes idle keep-alive connections and exits 0;
past --shutdown-timeout it exits anyway."""
import signal
import socket

import pytest

from zftest import TIMEOUT, is_closed, read_response, wait_until


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
