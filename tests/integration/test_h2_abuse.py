"""HTTP/2 abuse: rapid reset (CVE-2023-44487), PING / SETTINGS / empty DATA
floods. The abusive connection is dropped with GOAWAY(ENHANCE_YOUR_CALM)
while a well-behaved client on another connection keeps being served.

Clients: python3-h2 (test_h2.H2Conn) and curl."""
import socket

import h2.errors
import h2.exceptions
import pytest

from test_h2 import H2Conn, start_h2
from zftest import TIMEOUT, curl

CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@pytest.fixture
def srv(server_factory):
    return start_h2(server_factory, "--set", "h2.max_resets=100", "--set",
                    "h2.max_control_frames=300")


def _send_safely(c, frames_fn, n):
    """Calls frames_fn() n times, flushing each; stops when the server hung
    up. Returns how many were sent."""
    sent = 0
    try:
        for _ in range(n):
            frames_fn()
            c.flush()
            sent += 1
    except (OSError, h2.exceptions.ProtocolError):
        c.closed = True  # hung up, or python-h2 saw the GOAWAY already
    return sent


def _assert_dropped(c, srv, what):
    assert c.wait_closed(timeout=TIMEOUT), "abusive connection not closed"
    assert c.terminated is not None, "no GOAWAY before the close"
    assert c.terminated.error_code == CALM
    assert srv.wait_log(r"http2: \d+ %s.* within 10000 ms: dropping the connection" % what)


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_rapid_reset_drops_connection(srv, tls):
    port = srv.https_port if tls else srv.port
    good = H2Conn(port, tls=tls)
    try:
        assert good.get("/hello?who=good")[0] == 200
        bad = H2Conn(port, tls=tls)

        def open_and_reset():
            sid = bad.conn.get_next_available_stream_id()
            bad.conn.send_headers(sid, bad.headers("/hello?rr=1"), end_stream=True)
            bad.conn.reset_stream(sid)

        sent = _send_safely(bad, open_and_reset, 1000)
        _assert_dropped(bad, srv, r"stream resets \(rapid reset\)")
        assert sent < 1000 or bad.closed
        bad.close()
        # the well-behaved connection, opened before, is still served
        assert good.get("/hello?who=good-after")[0] == 200
    finally:
        good.close()
    # and new clients too
    assert curl("-k", "--http2", "https://127.0.0.1:%d/hello" % srv.https_port).stdout == \
        b"Hello, world!"
    # a reset request never reaches the application when it arrives together
    # with its HEADERS; at most a few slipped through between reads
    reached = sum(1 for line in srv.calls() if "rr=1" in line)
    assert reached < 100


def test_normal_cancellations_are_fine(srv):
    """A browser-like client cancelling some streams is not abusive."""
    c = H2Conn(srv.port)
    try:
        for i in range(50):
            sid = c.request("/sleep?s=0.01&i=%d" % i)
            c.conn.reset_stream(sid)
            c.flush()
            assert c.get("/hello")[0] == 200
        assert not c.closed and c.terminated is None
    finally:
        c.close()


def test_ping_flood_drops_connection(srv):
    good = H2Conn(srv.https_port, tls=True)
    bad = H2Conn(srv.https_port, tls=True)
    try:
        n = [0]

        def ping():
            n[0] += 1
            bad.conn.ping(n[0].to_bytes(8, "big"))

        # read while flooding, so this is the rate limit, not a full queue
        def ping_and_read():
            ping()
            if n[0] % 50 == 0:
                bad.flush()
                bad.pump(lambda: False, timeout=0.01)

        _send_safely(bad, ping_and_read, 1500)
        _assert_dropped(bad, srv, r"control frames")
        assert good.get("/hello")[0] == 200
    finally:
        good.close()
        bad.close()


def test_settings_flood_without_reading_drops_connection(srv):
    """SETTINGS frames from a client that never reads our ACKs."""
    bad = H2Conn(srv.port)
    bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        _send_safely(bad, lambda: bad.conn.update_settings({4: 65535}), 2000)
        _assert_dropped(bad, srv, r"control frames")
    finally:
        bad.close()
    assert curl("--http2-prior-knowledge", "http://127.0.0.1:%d/hello" % srv.port).stdout == \
        b"Hello, world!"


def test_empty_data_flood_drops_connection(srv):
    bad = H2Conn(srv.port)
    try:
        sid = bad.request("/body", method="POST", end=False)
        _send_safely(bad, lambda: bad.conn.send_data(sid, b""), 1500)
        _assert_dropped(bad, srv, r"control frames")
    finally:
        bad.close()
