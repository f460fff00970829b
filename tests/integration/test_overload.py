"""Overload at the connection level: the connection limit
(server.max_connections, derived from the descriptor limit by default) and
accept() running out of descriptors.

- Slowloris clients (a request line and header lines that never end) beyond
  the limit must not lock out a normal client: the least recently active
  header-phase connections are closed to make room, and the log says so.
- When no connection can be closed (every one is busy), new ones are
  refused at once, and the server serves again when a slot frees.
- accept() failing for want of descriptors is logged once per episode, with
  the count when it works again (not five lines a second).
"""
import contextlib
import re
import socket
import time

from zftest import TIMEOUT, wait_until


def slowloris(srv, n):
    """Opens n connections that each send a request line and one header
    line and then nothing more. Returns the sockets (the caller closes)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", srv.port))
        with contextlib.suppress(OSError):
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
        socks.append(s)
    return socks


def closed_count(socks):
    """How many of the sockets the server closed (EOF or reset seen)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1024) == b"":
                n += 1
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n


def test_slowloris_beyond_the_descriptor_limit_does_not_lock_out_a_get(server_factory):
    # ulimit -n 64 (soft = hard, so it cannot be raised): the default limit
    # is derived from it. 150 slowloris connections: without a limit they
    # take every descriptor and a GET waits in the backlog until the
    # header timeout (60 s here) frees some.
    srv = server_factory("--header-timeout", "60s", nofile=64, name="slowloris")
    socks = slowloris(srv, 150)
    try:
        time.sleep(0.5)
        status, _, body = srv.get("/hello", timeout=TIMEOUT)
        assert status == 200, body
        # and once more, while they are all still held by the clients
        status, _, body = srv.get("/hello", timeout=TIMEOUT)
        assert status == 200, body
        assert closed_count(socks) > 0
    finally:
        for s in socks:
            s.close()
    assert srv.wait_log(r"connection limit reached \(server\.max_connections = \d+\)")
    assert re.search(r"connection limit \d+ \(descriptor limit 64\)", srv.log())
    # the episode ends with its count once nothing happens for a second
    m = srv.wait_log(r"connection limit episode over after \d+s: (\d+) connection\(s\) shed")
    assert m and int(m.group(1)) > 0, srv.log()[-3000:]


def test_explicit_limit_sheds_oldest_header_phase_connections_first(server_factory):
    srv = server_factory("--max-connections", "20", "--header-timeout", "60s", name="limit20")
    old = slowloris(srv, 20)
    try:
        time.sleep(0.5)  # all 20 accepted and reading their header section
        new = slowloris(srv, 5)
        try:
            # 5 newcomers made room for themselves by closing the 5 oldest
            assert wait_until(lambda: closed_count(old[:5]) == 5, TIMEOUT), "oldest not shed"
            assert closed_count(old[5:]) == 0
            assert closed_count(new) == 0
            status, _, body = srv.get("/hello")
            assert status == 200, body
        finally:
            for s in new:
                s.close()
    finally:
        for s in old:
            s.close()
    assert srv.wait_log(r"connection limit reached \(server\.max_connections = 20\)")


def test_busy_connections_are_not_shed_and_new_ones_are_refused(server_factory):
    srv = server_factory("--max-connections", "3", "--threads", "1", name="limit3")
    busy = []
    try:
        # three connections with a request in the app (one running, two queued)
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", srv.port), TIMEOUT)
            s.sendall(b"GET /sleep?s=3&tag=b%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            busy.append(s)
        assert srv.wait_marker("calls.log")
        time.sleep(0.3)
        s = socket.create_connection(("127.0.0.1", srv.port), TIMEOUT)
        s.settimeout(TIMEOUT)
        try:
            # closed at once: nothing could be shed
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""
            assert got == b""
        finally:
            s.close()
        for b in busy:  # none of them was closed to make room
            b.settimeout(TIMEOUT)
            assert b.recv(12).startswith(b"HTTP/1.1 200")
    finally:
        for b in busy:
            b.close()
    # slots free again: served
    status, _, body = srv.get("/hello")
    assert status == 200, body
    m = srv.wait_log(r"connection limit episode over after \d+s: \d+ connection\(s\) shed, "
                     r"(\d+) refused")
    assert m and int(m.group(1)) >= 1


def test_out_of_descriptors_is_logged_once_per_episode(server_factory):
    # the limit is set above the descriptor limit, so accept() itself fails
    srv = server_factory("--max-connections", "1000", "--header-timeout", "60s",
                         nofile=64, name="emfile")
    socks = slowloris(srv, 120)
    try:
        time.sleep(2.5)  # today: an error line every 200 ms
        lines = re.findall(r"accept\(\) on \S+ failed", srv.log())
        assert len(lines) == 1, lines
    finally:
        for s in socks:
            s.close()
    status, _, body = srv.get("/hello")
    assert status == 200, body
    m = srv.wait_log(r"accept\(\) on \S+ works again: it failed (\d+) time\(s\)")
    assert m and int(m.group(1)) >= 2, srv.log()[-2000:]
