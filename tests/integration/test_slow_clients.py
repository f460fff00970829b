"""No worker waits on a client. With --threads 1 (one worker), a client that
stops reading a large file body, one that stops reading a large generated
body (which is suspended, whatever its chunk size, never spooled), and one
stalled half-way through an upload must each leave the worker free: a tiny
page still answers. Each stalled transfer then resumes and completes intact
(sha256). Bodies sent with write() spool for a stalled reader, and every
write still reaches a reader that keeps up at once."""
import hashlib
import json
import os
import time
import socket
import struct

import pytest

from zftest import TIMEOUT, gen_expected, read_head, wait_until, write_random_file

FILE_SIZE = 64 << 20
GEN_TOTAL = 256 << 20
UPLOAD = 8 << 20


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("--threads", "1", "--max-body-size", "64m", name="slow")
    s.file_sha = write_random_file(os.path.join(s.data, "big64.bin"), FILE_SIZE)
    return s


def hello_answers(srv):
    """Three /hello requests on fresh connections, each bounded by the
    generous socket timeout."""
    for _ in range(3):
        status, _, body = srv.get("/hello", timeout=TIMEOUT)
        assert status == 200 and body == b"Hello, world!"


class Stalled:
    """A response whose reader stopped after the head and a few bytes."""

    def __init__(self, srv, request):
        self.sock = srv.connect(timeout=TIMEOUT)
        self.sock.sendall(request)
        self.f = self.sock.makefile("rb", buffering=1 << 20)
        self.status, self.headers, _ = read_head(self.f)
        assert self.status == 200
        # the buffered reader may have taken up to 1 MiB of the body with the
        # head; nothing more is read until the test resumes
        self.h = hashlib.sha256()
        self.got = 0

    def finish_length(self, total):
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        while self.got < total:
            n = self.f.readinto(mv[:min(len(buf), total - self.got)])
            if not n:
                break
            self.h.update(mv[:n])
            self.got += n
        return self.got, self.h.hexdigest()

    def finish_chunked(self):
        while True:
            line = self.f.readline(100)
            assert line.endswith(b"\r\n"), line
            size = int(line.split(b";")[0], 16)
            if size == 0:
                assert self.f.readline(100) == b"\r\n"
                return self.got, self.h.hexdigest()
            left = size
            while left:
                data = self.f.read(min(left, 1 << 20))
                assert data
                self.h.update(data)
                self.got += len(data)
                left -= len(data)
            assert self.f.read(2) == b"\r\n"

    def close(self):
        self.f.close()
        self.sock.close()


def test_reader_stops_reading_file_body(srv):
    st = Stalled(srv, b"GET /file?name=big64.bin HTTP/1.1\r\nHost: h\r\n\r\n")
    try:
        assert st.headers["content-length"] == str(FILE_SIZE)
        hello_answers(srv)
        assert st.finish_length(FILE_SIZE) == (FILE_SIZE, srv.file_sha)
    finally:
        st.close()


def produced(srv, name):
    try:
        with open(srv.marker(name)) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_reader_stops_reading_generated_body(srv, framing):
    """An iterator body for a client that stops reading is suspended, not
    run to its end: the worker is free (/hello answers with --threads 1),
    the app produced only about what the socket and wsgi.output_buffer
    hold, and the whole body still arrives once the client reads."""
    cl = "&cl=1" if framing == "content-length" else ""
    name = "progress-" + framing
    st = Stalled(srv, b"GET /gen?total=%d&chunk=262144%s&progress=%s HTTP/1.1\r\nHost: h\r\n\r\n"
                 % (GEN_TOTAL, cl.encode(), name.encode()))
    try:
        if framing == "chunked":
            assert st.headers.get("transfer-encoding") == "chunked"
        hello_answers(srv)
        assert wait_until(lambda: produced(srv, name) > 0)
        time.sleep(0.5)  # a server that kept iterating would be far along by now
        assert produced(srv, name) < 64 << 20, produced(srv, name)
        assert not [t for t in srv.fds().values() if t.startswith(srv.tmp + "/")]
        if framing == "content-length":
            got = st.finish_length(GEN_TOTAL)
        else:
            got = st.finish_chunked()
        assert got == (GEN_TOTAL, gen_expected(GEN_TOTAL))
        assert produced(srv, name) == GEN_TOTAL
    finally:
        st.close()


# ------------------------------------------------ chunk sizes (issue 8)

OUTPUT_BUFFER = 256 << 10
# What the HTTP/1.1 transport may hold beyond the exchange: its output
# buffer (H1_OUT_HIGH, 256 KiB) plus one piece taken from a big chunk
# (ZF_TAKE_MAX, 256 KiB).
TRANSPORT = 512 << 10
CHUNKS = [(1, 4 << 20), (4095, 24 << 20), (300000, 48 << 20), ((1 << 20) + 1, 48 << 20)]


@pytest.fixture(scope="module")
def chunky(module_server_factory):
    # debug: the log says when a response starts spooling
    return module_server_factory("--threads", "2", "--output-buffer", str(OUTPUT_BUFFER),
                                 "--log-level", "debug", name="chunky")


def spooled_responses(srv):
    """How many responses started a spool file so far (debug log)."""
    return srv.log().count("client is slow: spooling")


def in_kernel(srv, sock):
    """Bytes between the server and this client held by the kernel: the
    server socket's send queue plus the client's receive queue
    (/proc/net/tcp, tx_queue:rx_queue)."""
    cport = sock.getsockname()[1]
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            lport = int(fields[1].split(":")[1], 16)
            rport = int(fields[2].split(":")[1], 16)
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            if lport == srv.port and rport == cport:
                total += tx
            elif lport == cport and rport == srv.port:
                total += rx
    return total


def settled(srv, name):
    """Waits (bounded) until the app's progress marker stops moving, i.e.
    the response is suspended or done; returns the last value."""
    last = -1
    for _ in range(int(TIMEOUT / 0.3)):
        now = produced(srv, name)
        if now == last and now > 0:
            return now
        last = now
        time.sleep(0.3)
    return produced(srv, name)


@pytest.mark.parametrize("chunk,total", CHUNKS, ids=[str(c) for c, _ in CHUNKS])
def test_stalled_reader_suspends_every_chunk_size(chunky, chunk, total):
    """Whatever the chunk size, an iterator body for a reader that stopped
    is suspended after at most wsgi.output_buffer + one chunk beyond what
    the transport and the kernel hold, and nothing goes to a spool file; the
    whole body then arrives intact."""
    name = "progress-chunk-%d" % chunk
    spools = len(chunky.spool_fds())
    spooled = spooled_responses(chunky)
    s = chunky.connect(rcvbuf=65536)
    try:
        s.sendall(b"GET /gen?total=%d&chunk=%d&cl=1&progress=%s HTTP/1.1\r\nHost: h\r\n\r\n"
                  % (total, chunk, name.encode()))
        assert wait_until(lambda: produced(chunky, name) > 0)
        made = settled(chunky, name)
        bound = OUTPUT_BUFFER + chunk + TRANSPORT + in_kernel(chunky, s)
        assert made <= bound, "app produced %d bytes for a stalled reader (bound %d)" % (made,
                                                                                        bound)
        assert made < total
        assert len(chunky.spool_fds()) == spools, chunky.spool_fds()
        assert spooled_responses(chunky) == spooled
        f = s.makefile("rb")
        status, headers, _ = read_head(f)
        assert status == 200 and headers["content-length"] == str(total)
        h = hashlib.sha256()
        left = total
        while left:
            data = f.read(min(left, 1 << 20))
            assert data
            h.update(data)
            left -= len(data)
        assert h.hexdigest() == gen_expected(total, chunk)
        f.close()
    finally:
        s.close()


FAST = [(3 << 20, 3 << 20, True), (3 << 20, (1 << 20) + 1, False), (3 << 20, 300000, False),
        (3 << 20, 4095, False), (256 << 10, 1, False)]


@pytest.mark.parametrize("total,chunk,single", FAST,
                         ids=["one-3MiB-chunk", "1MiB+1", "300000", "4095", "1"])
def test_fast_reader_never_spools(chunky, total, chunk, single):
    """A chunk the app already made is queued in memory, never copied to a
    temp file because it is big: `return [one_3MiB_bytes]` (and any chunk
    size) for a client that reads along opens no spool file, and arrives
    whole."""
    spools = len(chunky.spool_fds())
    spooled = spooled_responses(chunky)
    s = chunky.connect(rcvbuf=65536)  # the kernel cannot take it all at once
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /gen?total=%d&chunk=%d%s HTTP/1.1\r\nHost: h\r\n\r\n"
                  % (total, chunk, b"&list=1" if single else b""))
        status, headers, _ = read_head(f)
        assert status == 200
        # the response is in flight: a spool file would be open now
        assert len(chunky.spool_fds()) == spools, chunky.spool_fds()
        if single:  # one chunk: its length is the Content-Length
            assert headers["content-length"] == str(total)
            body = f.read(total)
            assert len(body) == total
            assert hashlib.sha256(body).hexdigest() == gen_expected(total, chunk)
        else:
            st = Stalled.__new__(Stalled)
            st.f, st.h, st.got = f, hashlib.sha256(), 0
            assert st.finish_chunked() == (total, gen_expected(total, chunk))
        assert len(chunky.spool_fds()) == spools, chunky.spool_fds()
        assert spooled_responses(chunky) == spooled
    finally:
        f.close()
        s.close()


def test_stalled_reader_single_big_chunk_stays_in_memory(chunky):
    """`return [one_3MiB_bytes]` for a reader that stopped: queued in
    memory (the app made it already), not copied to a spool file; it
    arrives whole once the client reads."""
    total = 3 << 20
    spools = len(chunky.spool_fds())
    spooled = spooled_responses(chunky)
    s = chunky.connect(rcvbuf=65536)
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /gen?total=%d&chunk=%d&list=1 HTTP/1.1\r\nHost: h\r\n\r\n"
                  % (total, total))
        assert wait_until(lambda: any("/gen" in c for c in chunky.calls() if "list=1" in c))
        time.sleep(0.5)  # give a spooling server the time to open its file
        assert len(chunky.spool_fds()) == spools, chunky.spool_fds()
        status, headers, _ = read_head(f)
        assert status == 200 and headers["content-length"] == str(total)
        body = f.read(total)
        assert hashlib.sha256(body).hexdigest() == gen_expected(total, total)
        assert spooled_responses(chunky) == spooled
    finally:
        f.close()
        s.close()


def test_write_streaming_after_a_big_write(chunky):
    """Every write() reaches a client that keeps up, without waiting for
    more data, also after big writes that went to the spool file while the
    client did not read (long-poll, server-sent events): the app writes
    event i+1 only once the client got event i."""
    big, bigs = 1 << 20, 8
    s = chunky.connect(rcvbuf=65536)  # the kernel cannot take all the big writes
    f = s.makefile("rb", buffering=0)
    try:
        s.sendall(b"GET /stream?name=sse&big=%d&bigs=%d&events=5 HTTP/1.1\r\nHost: h\r\n\r\n"
                  % (big, bigs))
        status, headers, _ = read_head(f)
        assert status == 200 and headers.get("transfer-encoding") == "chunked"
        assert chunky.wait_marker("big-sse")
        # the client read nothing so far: the second big write had to spool
        assert chunky.spool_fds() or spooled_responses(chunky), \
            "the big writes did not reach the spool"
        r = Dechunk(f)
        assert r.read_exactly(bigs * big) == b"B" * (bigs * big)
        for i in range(5):
            line = r.read_exactly(len(b"event %d\n" % i))
            assert line == b"event %d\n" % i
            open(chunky.marker("ack-sse-%d" % i), "w").close()
        assert r.read_exactly(0) == b"" and r.at_end()
        assert not os.path.exists(chunky.marker("late-sse")), "a write waited for more data"
    finally:
        f.close()
        s.close()


class Dechunk:
    """Reads the payload of a chunked body, as far as asked (not further)."""

    def __init__(self, f):
        self.f = f
        self.left = 0
        self.ended = False

    def read_exactly(self, n):
        out = bytearray()
        while len(out) < n:
            if self.left == 0:
                self._next_chunk()
                assert not self.ended, "body ended after %d of %d bytes" % (len(out), n)
            data = self.f.read(min(self.left, n - len(out)))
            assert data, "connection closed"
            out += data
            self.left -= len(data)
            if self.left == 0:
                assert self.f.read(2) == b"\r\n"
        return bytes(out)

    def _next_chunk(self):
        line = b""
        while not line.endswith(b"\r\n"):
            c = self.f.read(1)
            assert c, "connection closed"
            line += c
        self.left = int(line.split(b";")[0], 16)
        if self.left == 0:
            assert self.f.read(2) == b"\r\n"
            self.ended = True

    def at_end(self):
        if not self.ended and self.left == 0:
            self._next_chunk()
        return self.ended


def test_suspended_body_closed_when_client_leaves(srv):
    """A client that goes away while its response is suspended: the worker
    is woken for it, stops iterating and calls close() on the app's
    iterable; the worker then serves other requests as before."""
    name = "progress-abandoned"
    st = Stalled(srv, b"GET /gen?total=%d&chunk=262144&cl=1&marker=closed-abandoned"
                      b"&progress=%s HTTP/1.1\r\nHost: h\r\n\r\n" % (GEN_TOTAL, name.encode()))
    assert wait_until(lambda: produced(srv, name) > 0)
    st.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    st.close()  # reset: the client is gone
    assert srv.wait_marker("closed-abandoned"), "close() not called on the suspended iterable"
    assert produced(srv, name) < GEN_TOTAL
    hello_answers(srv)


def test_reader_stops_reading_written_body(srv):
    """A body sent through write() cannot be suspended (the app's own code is
    on the stack): beyond wsgi.output_buffer it goes to a spool file, so the
    worker is free at once all the same, and the file is gone afterwards."""
    st = Stalled(srv, b"GET /gen?total=%d&chunk=262144&cl=1&via=write HTTP/1.1\r\nHost: h\r\n\r\n"
                 % GEN_TOTAL)
    try:
        hello_answers(srv)
        assert [t for t in srv.fds().values() if t.startswith(srv.tmp + "/")], srv.fds()
        assert st.finish_length(GEN_TOTAL) == (GEN_TOTAL, gen_expected(GEN_TOTAL))
    finally:
        st.close()
    assert wait_until(lambda: not [t for t in srv.fds().values() if t.startswith(srv.tmp)])


def test_stalled_generated_body_within_a_service_fd_limit(server_factory):
    """Spooling must not cost a descriptor per spooled piece: with the
    ulimit -n of a typical service (here 256), a client stalled on a 512 MiB
    generated body still gets all of it, and new connections are accepted."""
    total = 512 << 20
    srv = server_factory("--threads", "1", nofile=256, name="slow-nofile")
    st = Stalled(srv, b"GET /gen?total=%d&cl=1&via=write HTTP/1.1\r\nHost: h\r\n\r\n" % total)
    try:
        hello_answers(srv)
        spool_fds = [t for t in srv.fds().values() if t.startswith(srv.tmp + "/")]
        assert len(spool_fds) <= 8, "%d descriptors on the spool file" % len(spool_fds)
        assert st.finish_length(total) == (total, gen_expected(total))
    finally:
        st.close()
    assert "Too many open files" not in srv.log()


def test_upload_stalled_half_way(srv):
    data = os.urandom(UPLOAD)
    s = srv.connect(timeout=TIMEOUT)
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
        s.sendall(data[:UPLOAD // 2])
        hello_answers(srv)
        s.sendall(data[UPLOAD // 2:])
        status, headers, _ = read_head(f)
        assert status == 200
        info = json.loads(f.read(int(headers["content-length"])))
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        f.close()
        s.close()


def test_all_three_stalled_at_once(srv):
    up = srv.connect(timeout=TIMEOUT)
    up.sendall(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
    up.sendall(b"x" * (UPLOAD // 2))
    st_file = Stalled(srv, b"GET /file?name=big64.bin HTTP/1.1\r\nHost: h\r\n\r\n")
    st_gen = Stalled(srv, b"GET /gen?total=%d&cl=1 HTTP/1.1\r\nHost: h\r\n\r\n" % GEN_TOTAL)
    try:
        hello_answers(srv)
    finally:
        for st in (st_file, st_gen):
            st.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            st.close()
        up.close()
    hello_answers(srv)
