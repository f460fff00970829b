"""No worker waits on a client. With --threads 1 (one worker), a client that
stops reading a large file body, one that stops reading a large generated
body (which must spool to a temp file), and one stalled half-way through an
upload must each leave the worker free: a tiny page still answers. Each
stalled transfer then resumes and completes intact (sha256)."""
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
