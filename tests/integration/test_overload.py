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
import os
import re
import signal
import socket
import ssl
import time

import pytest
from test_h2 import H2Conn
from zftest import TIMEOUT, curl, wait_until


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


def silent(port, n, first=b""):
    """n connections to port that send `first` and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_burst_of_newcomers_at_the_limit_does_not_run_out_of_descriptors(server_factory,
                                                                          scheme):
    # At the limit every accept closes an old connection to make room. The
    # descriptors so freed must be free at once: libevent closes the socket
    # of a freed bufferevent only later in the loop iteration, and a burst
    # of accepts (one listener callback takes the whole backlog) then hits
    # EMFILE after the descriptor reserve, pausing accept() for 200 ms each
    # time (slowloris: /hello waited seconds). The server is stopped while
    # the newcomers connect, so they are all in the backlog at once.
    # http: header-phase connections; https: TLS handshakes not begun.
    args = ("--header-timeout", "60s", "--set", "tls.handshake_timeout=60s")
    if scheme == "https":
        srv = start_https(server_factory, *args, nofile=256, name="burst-tls")
        port, first = srv.https_port, b""
    else:
        srv = server_factory(*args, nofile=256, name="burst")
        port, first = srv.port, b"GET /hello HTTP/1.1\r\nHost: t\r\n"
    m = re.search(r"connection limit (\d+) \(descriptor limit 256\)", srv.log())
    assert m, srv.log()
    limit = int(m.group(1))
    spare = 256 - limit  # the reserve and the descriptors already open
    assert spare + 16 < limit
    old = silent(port, limit, first)
    new = []
    try:
        time.sleep(0.5)  # all accepted
        assert closed_count(old) == 0
        srv.signal(signal.SIGSTOP)
        try:
            new = silent(port, spare + 16, first)  # the kernel completes them
        finally:
            srv.signal(signal.SIGCONT)
        # each newcomer took the place of one old connection
        assert wait_until(lambda: closed_count(old[:len(new)]) == len(new), TIMEOUT), \
            srv.log()[-2000:]
        assert closed_count(new) == 0
    finally:
        for s in old + new:
            s.close()
    assert not re.search(r"accept\(\) on \S+ failed", srv.log()), srv.log()[-2000:]
    m = srv.wait_log(r"connection limit episode over after \d+s: (\d+) connection\(s\) shed")
    assert m and int(m.group(1)) >= spare + 16, srv.log()[-2000:]


def test_a_burst_larger_than_the_limit_does_not_shed_its_own_first_newcomers(server_factory):
    # One accept callback takes the whole backlog, and a newcomer's request
    # is read only in a later loop iteration. A burst of more newcomers than
    # the limit (thousands of attackers reconnecting at once) must not shed
    # the first of them before their request is even read: a normal client
    # among them would be reset. The server is stopped while they connect.
    srv = server_factory("--header-timeout", "60s", nofile=256, name="burst-big")
    m = re.search(r"connection limit (\d+) \(descriptor limit 256\)", srv.log())
    assert m, srv.log()
    limit = int(m.group(1))
    head = b"GET /hello HTTP/1.1\r\nHost: t\r\n"
    old = silent(srv.port, limit, head)
    new = []
    try:
        time.sleep(0.5)  # all accepted
        srv.signal(signal.SIGSTOP)
        try:
            client = socket.create_connection(("127.0.0.1", srv.port), TIMEOUT)
            new.append(client)
            client.sendall(head + b"\r\n")
            new += silent(srv.port, limit + 16, head)
        finally:
            srv.signal(signal.SIGCONT)
        data = b""
        with contextlib.suppress(OSError):
            while b"Hello" not in data:
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"Hello" in data, (data, srv.log()[-2000:])
    finally:
        for s in old + new:
            s.close()


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


# ------------------------------------------ TLS handshakes and HTTP/2 connections


HTTPS_RE = r"https: listening on 127\.0\.0\.1:(\d+)"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def start_https(factory, *args, **kw):
    """A started server with an https listener too; .https_port is its port."""
    s = factory(*args, start=False, **kw)
    s.args += ["--https", "127.0.0.1:0", "--state-dir", os.path.join(s.root, "state")]
    s.start()
    m = s.wait_log(HTTPS_RE)
    assert m, s.log()
    s.https_port = int(m.group(1))
    return s


def client_hello():
    """The bytes of a real TLS ClientHello (from Python's ssl, not sent)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16", hello[:8]
    return hello


def stuck_handshakes(port, n):
    """n TLS connections that never finish their handshake: a third send
    nothing, a third half a ClientHello, a third a whole ClientHello (the
    server answers and waits for the client's Finished forever)."""
    hello = client_hello()
    socks = []
    for i in range(n):
        s = socket.socket()
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", port))
        with contextlib.suppress(OSError):
            if i % 3 == 1:
                s.sendall(hello[:len(hello) // 2])
            elif i % 3 == 2:
                s.sendall(hello)
        socks.append(s)
    return socks


def idle_h2c(port, n):
    """n h2c prior-knowledge connections that send the client preface and
    an empty SETTINGS frame and then nothing (never a request). Each one is
    opened once the previous one is an HTTP/2 session (its server SETTINGS
    arrived), as long as they do arrive; returns the sockets and the bytes
    received on each so far."""
    socks, got = [], []
    waiting = True
    for _ in range(n):
        s = socket.socket()
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", port))
        data = b""
        with contextlib.suppress(OSError):
            s.sendall(H2_PREFACE + EMPTY_SETTINGS)
            s.settimeout(2.0)
            while waiting and len(data) < 9:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        if len(data) < 9:
            waiting = False  # not served (today: out of descriptors): stop waiting
        socks.append(s)
        got.append(data)
    return socks, got


def drain(sock):
    """Reads what the server sent so far without waiting. Returns (closed,
    data): closed when the server closed (EOF or reset seen)."""
    sock.setblocking(False)
    data = b""
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return True, data
            data += b
    except BlockingIOError:
        return False, data
    except OSError:
        return True, data


def h2_frames(data):
    """The HTTP/2 frames in data as (type, payload) pairs."""
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[9:9 + length]))
        data = data[9 + length:]
    return frames


def test_stuck_tls_handshakes_beyond_the_limit_do_not_lock_out_https(server_factory):
    # ulimit -n 64: 90 TLS connections that never finish the handshake
    # (held for a minute by tls.handshake_timeout) would take every
    # descriptor if handshakes were not counted and shed
    srv = start_https(server_factory, "--set", "tls.handshake_timeout=60s", nofile=64,
                      name="tls-limit")
    socks = stuck_handshakes(srv.https_port, 90)
    try:
        time.sleep(0.5)
        for _ in range(2):  # and again, while they are all still held
            p = curl("-k", "-o", "-", "-w", "\n%{http_code}",
                     "https://127.0.0.1:%d/hello" % srv.https_port, timeout=TIMEOUT, check=False)
            assert p.returncode == 0 and p.stdout.endswith(b"\n200"), (p.stderr, srv.log()[-2000:])
        assert any(drain(s)[0] for s in socks), "no stuck handshake was closed"
    finally:
        for s in socks:
            s.close()
    assert srv.wait_log(r"connection limit reached \(server\.max_connections = \d+\)")
    m = srv.wait_log(r"connection limit episode over after \d+s: (\d+) connection\(s\) shed")
    assert m and int(m.group(1)) > 0, srv.log()[-3000:]


def test_idle_h2c_connections_beyond_the_limit_are_shed_with_goaway(server_factory):
    # ulimit -n 64: 90 h2c connections that sent only the preface and
    # SETTINGS (held for h2.idle_timeout) would take every descriptor if
    # HTTP/2 connections were not counted and shed
    srv = server_factory("--set", "h2.idle_timeout=60s", nofile=64, name="h2c-limit")
    socks, got = idle_h2c(srv.port, 90)
    try:
        for _ in range(2):
            status, _, body = srv.get("/hello", timeout=TIMEOUT)
            assert status == 200, body
        seen = [drain(s) for s in socks]
        shed = [i for i, (closed, _) in enumerate(seen) if closed]
        assert shed, "no idle h2c connection was closed"
        # the oldest went first, and was told why (GOAWAY, NO_ERROR)
        assert shed[0] == 0, shed
        frames = h2_frames(got[0] + seen[0][1])
        goaways = [p for t, p in frames if t == 0x7]
        assert goaways and int.from_bytes(goaways[-1][4:8], "big") == 0, frames
    finally:
        for s in socks:
            s.close()
    assert srv.wait_log(r"connection limit reached \(server\.max_connections = \d+\)")
    m = srv.wait_log(r"connection limit episode over after \d+s: (\d+) connection\(s\) shed")
    assert m and int(m.group(1)) > 0, srv.log()[-3000:]


def test_h2_connection_with_a_stream_in_progress_is_never_shed(server_factory):
    srv = server_factory("--max-connections", "6", "--threads", "2",
                         "--set", "h2.idle_timeout=60s", name="h2-busy")
    busy = H2Conn(srv.port)
    try:
        sid = busy.request("/sleep?s=3")
        assert srv.wait_marker("calls.log")
        # the busy connection is the least recently active one: only its
        # stream in progress keeps it from being shed first
        idle, _ = idle_h2c(srv.port, 12)
        try:
            status, _, body = srv.get("/hello")
            assert status == 200, body
            assert any(drain(s)[0] for s in idle), "no idle connection was shed"
            st = busy.wait(sid)
            assert st["status"] == 200 and bytes(st["data"]) == b"slept 3", st
        finally:
            for s in idle:
                s.close()
    finally:
        busy.close()
    m = srv.wait_log(r"connection limit episode over after \d+s: (\d+) connection\(s\) shed")
    assert m and int(m.group(1)) > 0, srv.log()[-3000:]


def test_each_socket_counted_once_across_tls_and_h2_hand_offs(server_factory):
    # --max-connections 2: after a series of connections through every
    # hand-off (TLS -> HTTP/1.1, TLS -> h2, HTTP/1.1 -> h2c by preface and
    # by Upgrade, a failed handshake), each released exactly once, two busy
    # HTTP/2 connections fill the limit and a third connection is refused
    srv = start_https(server_factory, "--max-connections", "2", "--threads", "2",
                      name="count-once")
    base = srv.fd_count()
    for _ in range(3):
        for args in (["--http2-prior-knowledge", srv.url("/hello")],
                     ["--http2", srv.url("/hello")],
                     ["-k", "--http2", "https://127.0.0.1:%d/hello" % srv.https_port],
                     ["-k", "--http1.1", "https://127.0.0.1:%d/hello" % srv.https_port]):
            p = curl("-o", "-", "-w", "\n%{http_code}", *args)
            assert p.stdout.endswith(b"\n200"), (args, p.stdout[-200:])
        socket.create_connection(("127.0.0.1", srv.https_port), TIMEOUT).close()
    assert wait_until(lambda: srv.fd_count() <= base), srv.fds()
    busy = [H2Conn(srv.port), H2Conn(srv.https_port, tls=True)]
    try:
        sids = [c.request("/sleep?s=2") for c in busy]
        assert wait_until(lambda: len([x for x in srv.calls() if "/sleep" in x]) == 2)
        s = socket.create_connection(("127.0.0.1", srv.port), TIMEOUT)
        s.settimeout(TIMEOUT)
        try:
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""
            except socket.timeout:
                got = None  # taken, and waiting for a request
            assert got == b"", "a third connection was taken beyond the limit"
        finally:
            s.close()
        for c, sid in zip(busy, sids):
            assert c.wait(sid)["status"] == 200
    finally:
        for c in busy:
            c.close()
    m = srv.wait_log(r"connection limit episode over after \d+s: \d+ connection\(s\) shed, "
                     r"(\d+) refused")
    assert m and int(m.group(1)) >= 1


def test_idle_h2_over_tls_is_shed_with_goaway(server_factory):
    # three idle h2 sessions over TLS fill --max-connections 3; a new
    # connection closes the oldest, which reads GOAWAY(NO_ERROR) first
    srv = start_https(server_factory, "--max-connections", "3", name="h2-tls-shed")
    conns = []
    try:
        for _ in range(3):
            c = H2Conn(srv.https_port, tls=True)
            assert c.pump(lambda: c.events, timeout=TIMEOUT)  # the server's SETTINGS
            conns.append(c)
        status, _, body = srv.get("/hello")
        assert status == 200, body
        oldest = conns[0]
        assert oldest.pump(lambda: oldest.terminated is not None), oldest.events
        assert oldest.terminated.error_code == 0, oldest.terminated
        assert not conns[2].pump(lambda: conns[2].closed or conns[2].terminated, timeout=0.3)
    finally:
        for c in conns:
            c.close()
