"""Request bodies: small ones in memory, large ones (> --input-spool) spooled
to an unlinked temp file under --tmp-dir; wsgi.input's read / read(n) /
readline / readline(n) / readlines / iteration all give back exactly the
bytes sent (sha256); an upload aborted half-way never reaches the app and
leaves no temp file or descriptor behind."""
import json
import os
import random
import socket
import struct
import time
import uuid

import pytest

from zftest import read_response, sha256_hex, wait_until

SPOOL = 64 * 1024


def make_body(size, seed):
    """Random bytes with a newline every 1..300 bytes (lines of all
    lengths), not ending in a newline."""
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        n = rnd.randint(0, 300)
        out += rnd.randbytes(n).replace(b"\n", b"\x0b") + b"\n"
    out = out[:size]
    if out.endswith(b"\n"):
        out[-1:] = b"x"
    return bytes(out)


SMALL = make_body(10000, 1)
LARGE = make_body(3 * 1024 * 1024 + 17, 2)


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("--input-spool", "64k", "--max-body-size", "64m",
                                 "--threads", "2", name="body")


@pytest.fixture(scope="module")
def srv_default(module_server_factory):
    return module_server_factory("--max-body-size", "64m", name="body-default")


MODES = ["read", "readcl", "chunks&size=1000", "chunks&size=7", "readline", "readline&size=50",
         "readline&size=1", "readlines", "iter", "mixed"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["small", "large"])
def test_wsgi_input(srv, which, mode):
    data = SMALL if which == "small" else LARGE
    status, _, body = srv.request("POST", "/body?mode=" + mode, body=data,
                                  headers={"Content-Type": "application/octet-stream"})
    assert status == 200, body[:2000]
    info = json.loads(body)
    assert info["len"] == len(data)
    assert info["sha256"] == sha256_hex(data)
    assert info["after_eof"] == 0
    assert info["content_length"] == str(len(data))
    assert info["spooled"] is (which == "large"), info


def test_line_counts(srv):
    status, _, body = srv.request("POST", "/body?mode=readlines", body=LARGE)
    info = json.loads(body)
    assert info["pieces"] == LARGE.count(b"\n") + 1


def test_large_chunked_upload_spooled(srv):
    data = LARGE
    parts = [data[i:i + 100000] for i in range(0, len(data), 100000)]
    c = srv.http()
    try:
        c.request("POST", "/body?mode=iter", body=iter(parts), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        info = json.loads(r.read())
    finally:
        c.close()
    assert info["sha256"] == sha256_hex(data) and info["spooled"] is True
    assert info["content_length"] == str(len(data))


@pytest.mark.parametrize("size,spooled", [(900 * 1024, False), (1536 * 1024, True)])
def test_default_spool_threshold_is_1m(srv_default, size, spooled):
    data = os.urandom(size)
    info = json.loads(srv_default.request("POST", "/body", body=data)[2])
    assert info["sha256"] == sha256_hex(data)
    assert info["spooled"] is spooled


def test_spool_files_do_not_stay(srv):
    for _ in range(3):
        srv.request("POST", "/body", body=LARGE)
    # spool files are unlinked at creation (the tmp dir never shows them):
    # what counts is the server's descriptors on deleted files
    assert wait_until(lambda: not srv.spool_fds()), srv.spool_fds()


# ------------------------------------------------------------- wsgi.input.fileno()


def _fileno_request(srv, data, chunked=False):
    if not chunked:
        status, _, body = srv.request("POST", "/body?mode=fileno", body=data)
        assert status == 200, body[:2000]
        return json.loads(body)
    parts = [data[i:i + 100000] for i in range(0, len(data), 100000)]
    c = srv.http()
    try:
        c.request("POST", "/body?mode=fileno", body=iter(parts), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        assert r.status == 200
        return json.loads(r.read())
    finally:
        c.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_fileno_of_spooled_body(srv, chunked):
    # the descriptor holds exactly the body (os.pread from 0), and reading it
    # does not move the stream: read(1000) before, read() after still give
    # the body in order; the descriptor is zfront's and closed after the request
    info = _fileno_request(srv, LARGE, chunked)
    assert info["spooled"] is True
    fi = info["fileno"]
    assert "error" not in fi, fi
    assert fi["fd_len"] == len(LARGE)
    assert fi["fd_sha256"] == sha256_hex(LARGE)
    assert fi["tell"] == 1000
    assert info["len"] == len(LARGE) and info["sha256"] == sha256_hex(LARGE)
    assert info["after_eof"] == 0
    assert wait_until(lambda: not srv.spool_fds()), srv.spool_fds()
    # kept past its request: every method raises ValueError, fileno() too
    status, _, body = srv.request("GET", "/kept_input")
    assert (status, body) == (200, b"ValueError")


def test_fileno_of_body_in_memory_raises(srv):
    info = _fileno_request(srv, SMALL)
    assert info["spooled"] is False
    fi = info["fileno"]
    # as io.BytesIO: io.UnsupportedOperation (an OSError and a ValueError)
    assert fi["error"] == "UnsupportedOperation" and fi["oserror"] is True, fi
    assert info["len"] == len(SMALL) and info["sha256"] == sha256_hex(SMALL)


# ------------------------------------------------------------- aborted uploads


def _abort_upload(srv, head, part, reset):
    s = srv.connect()
    try:
        s.sendall(head + part)
        time.sleep(0.1)  # let the server take in what was sent
    finally:
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


@pytest.mark.parametrize("kind", ["memory", "spooled", "chunked-memory", "chunked-spooled"])
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_aborted_upload_never_reaches_app(srv, kind, reset):
    tag = "abort-%s-%s" % (kind, uuid.uuid4().hex[:8])
    size = 20000 if kind.endswith("memory") else 4 * 1024 * 1024
    if kind.startswith("chunked"):
        head = (b"POST /body?tag=%s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                % tag.encode())
        piece = b"%x\r\n%s\r\n" % (4096, b"c" * 4096)
        part = piece * (size // 2 // 4096)  # no last chunk: incomplete
    else:
        head = (b"POST /body?tag=%s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                % (tag.encode(), size))
        part = b"u" * (size // 2)
    _abort_upload(srv, head, part, reset)
    # the server must go on serving, and must not have called the app
    for _ in range(3):
        assert srv.get("/hello")[2] == b"Hello, world!"
    time.sleep(0.3)
    assert not [c for c in srv.calls() if tag in c], "aborted upload reached the app"
    assert wait_until(lambda: not srv.spool_fds()), \
        "spool file of an aborted upload still open: %s" % srv.spool_fds()


def test_half_closed_incomplete_upload_not_dispatched(srv):
    """The client shuts down its sending side before the body is complete:
    the body can never complete, so the app must not see it."""
    tag = "halfclose-" + uuid.uuid4().hex[:8]
    s = srv.connect()
    try:
        s.sendall(b"POST /body?tag=%s HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"
                  % tag.encode() + b"h" * 500)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        if data:
            assert not data.startswith(b"HTTP/1.1 200"), data[:200]
    finally:
        s.close()
    assert not [c for c in srv.calls() if tag in c]


def test_complete_upload_after_aborts(srv):
    info = json.loads(srv.request("POST", "/body?mode=readline", body=LARGE)[2])
    assert info["sha256"] == sha256_hex(LARGE)


def test_content_length_zero_post(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        r, body = read_response(f)
        info = json.loads(body)
        assert info["len"] == 0 and info["after_eof"] == 0
    finally:
        f.close()
        s.close()


# ------------------------------------------------------------- spliced uploads
# A Content-Length body above the spool threshold on a plain connection is
# read with splice(2) (socket -> pipe -> spool file) once the header section
# is in; the debug log says how many of its bytes went that way.


@pytest.fixture(scope="module")
def srv_debug(module_server_factory):
    return module_server_factory("--input-spool", "64k", "--max-body-size", "64m",
                                 "--log-level", "debug", "--threads", "2", name="body-splice")


def _pipes(srv):
    return [t for t in srv.fds().values() if t.startswith("pipe:")]


def test_spliced_upload_is_byte_exact(srv_debug):
    srv = srv_debug
    pipes_before = len(_pipes(srv))
    data = make_body(5 * 1024 * 1024 + 4099, 7)
    tag = "splice-" + uuid.uuid4().hex[:8]
    s = srv.connect()
    f = s.makefile("rb")
    try:
        # the header section alone first, then the body in uneven pieces
        s.sendall(b"POST /body?mode=chunks&size=65536&tag=%s HTTP/1.1\r\nHost: h\r\n"
                  b"Content-Length: %d\r\n\r\n" % (tag.encode(), len(data)))
        time.sleep(0.1)
        off = 0
        for n in (1, 70000, 1 << 20, 333333):
            s.sendall(data[off:off + n])
            off += n
        s.sendall(data[off:])
        r, body = read_response(f)
    finally:
        f.close()
        s.close()
    assert r.status == 200, body[:500]
    info = json.loads(body)
    assert info["len"] == len(data) and info["sha256"] == sha256_hex(data)
    assert info["spooled"] is True and info["after_eof"] == 0
    m = srv.wait_log(r"request body: (\d+) of %d bytes spliced to the spool file" % len(data))
    assert m and int(m.group(1)) > len(data) // 2, "the body was not spliced"
    assert wait_until(lambda: len(_pipes(srv)) == pipes_before), _pipes(srv)


def test_expect_100_continue_upload_is_spliced_whole(srv_debug):
    # curl -T sends Expect: 100-continue: the 100 goes out as soon as the
    # header section is in, before any body byte, and then the whole body
    # takes the splice path (none of it is read through the bufferevent)
    srv = srv_debug
    data = make_body(3 * 1024 * 1024 + 1237, 11)
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"PUT /body?mode=chunks&size=65536 HTTP/1.1\r\nHost: h\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(data))
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(data)
        r, body = read_response(f)
    finally:
        f.close()
        s.close()
    assert r.status == 200, body[:500]
    info = json.loads(body)
    assert info["len"] == len(data) and info["sha256"] == sha256_hex(data)
    m = srv.wait_log(r"request body: (\d+) of %d bytes spliced to the spool file" % len(data))
    assert m and int(m.group(1)) == len(data), "not all of the body was spliced"


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_upload_aborted_mid_splice_never_reaches_app(srv_debug, reset):
    srv = srv_debug
    pipes_before = len(_pipes(srv))
    tag = "splice-abort-" + uuid.uuid4().hex[:8]
    size = 8 * 1024 * 1024
    s = srv.connect()
    try:
        s.sendall(b"POST /body?tag=%s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                  % (tag.encode(), size))
        time.sleep(0.1)
        s.sendall(b"a" * (1 << 20))
        # the server is splicing: a pipe is open for this connection
        assert wait_until(lambda: len(_pipes(srv)) > pipes_before), "no splice pipe"
        s.sendall(b"b" * (1 << 20))
        time.sleep(0.1)
    finally:
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert srv.wait_log(r"client (closed the connection|connection lost).* after \d+ bytes of "
                        r"the request body")
    for _ in range(2):
        assert srv.get("/hello")[2] == b"Hello, world!"
    time.sleep(0.3)
    assert not [c for c in srv.calls() if tag in c], "aborted upload reached the app"
    assert wait_until(lambda: not [t for t in srv.fds().values() if t.startswith(srv.tmp)]), \
        "spool file of an aborted upload still open"
    assert wait_until(lambda: len(_pipes(srv)) == pipes_before), _pipes(srv)
