"""Limits and timeouts, each with its clear error: 431 (header section too
big, too many fields), 413 (body too big: declared or chunked), 414 (request
line), 400 then close (malformed), 408 (header timeout, body timeout), close
(idle keep-alive, a client that takes no response bytes, the keep-alive
request cap); and the server keeps serving afterwards."""
import select
import socket
import time

import pytest

from zftest import TIMEOUT, is_closed, read_head, read_response

MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory(
        "--max-body-size", "1m", "--max-header-size", "16k", "--max-request-line", "4k",
        "--max-headers", "50",
        "--header-timeout", "1s", "--body-timeout", "1s", "--keepalive-timeout", "1s",
        "--send-timeout", "1s", "--max-keepalive-requests", "5", name="limits")


def exchange(srv, data, method="GET"):
    """Sends raw bytes, returns (status, headers, raw_head, closed_after)."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        status, headers, raw = read_head(f)
        return status, headers, raw
    finally:
        f.close()
        s.close()


def status_then_closed(srv, data):
    """Sends raw bytes; returns (status, closed): the status of the one
    response and whether the server then closed without sending more."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r, body = read_response(f)
        try:
            return r.status, f.read() == b""
        except ConnectionResetError:
            return r.status, True
        except socket.timeout:
            return r.status, False
    finally:
        f.close()
        s.close()


def wait_close(s):
    """Reads until the server closes, bounded by TIMEOUT. Returns the bytes
    received, or None when the connection was still open at the end."""
    s.settimeout(TIMEOUT)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b
    except ConnectionResetError:
        return out
    except socket.timeout:
        return None


def test_431_huge_header(srv):
    big = b"X-Big: " + b"a" * 40000 + b"\r\n"
    status, _, raw = exchange(srv, b"GET /hello HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n")
    assert status == 431, raw


def test_431_header_section_too_big_in_many_fields(srv):
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 900) for i in range(30))  # ~27 KiB
    status, _, raw = exchange(srv, b"GET /hello HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    assert status == 431, raw


def test_431_too_many_header_fields(srv):
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(200))  # ~2 KiB, 200 fields
    status, _, raw = exchange(srv, b"GET /hello HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    assert status == 431, raw


def test_headers_under_limits_pass(srv):
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(40))  # ~4.5 KiB
    status, _, raw = exchange(srv, b"GET /hello HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    assert status == 200, raw


def test_414_long_request_line(srv):
    status, _, raw = exchange(srv, b"GET /hello?" + b"q" * 8000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 414, raw


def test_414_long_path_only(srv):
    status, _, raw = exchange(srv, b"GET /" + b"p" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 414, raw


def test_request_line_under_limit_passes(srv):
    status, _, raw = exchange(srv, b"GET /hello?" + b"q" * 3000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200, raw


def test_413_declared_content_length(srv):
    # no body is sent: the answer must not wait for it
    status, _, raw = exchange(srv, b"POST /body?tag=cl413 HTTP/1.1\r\nHost: t\r\n"
                                   b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert status == 413, raw
    assert not [c for c in srv.calls() if "cl413" in c]


def test_413_chunked_body(srv):
    s = srv.connect()
    f = s.makefile("rb")
    piece = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
    try:
        s.sendall(b"POST /body?tag=chunked413 HTTP/1.1\r\nHost: t\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(48):  # 3 MiB at most, stop as soon as an answer arrives
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([s], [], [], 0)[0]:
                break
        status, _, raw = read_head(f)
        assert status == 413, raw
    finally:
        f.close()
        s.close()
    assert not [c for c in srv.calls() if "chunked413" in c]


def test_body_at_the_limit_passes(srv):
    data = b"b" * MAX_BODY
    status, _, body = srv.request("POST", "/body?mode=readcl", body=data)
    assert status == 200, body


def test_400_then_close_after_good_request(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"THIS IS NOT HTTP\r\n\r\n"
                  b"GET /hello?after-garbage HTTP/1.1\r\nHost: t\r\n\r\n")
        r, body = read_response(f)
        assert r.status == 200 and body == b"Hello, world!"
        r, body = read_response(f)
        assert r.status == 400
        assert f.read() == b"", "the server answered after a malformed request"
    finally:
        f.close()
        s.close()
    assert not [c for c in srv.calls() if "after-garbage" in c]


@pytest.mark.parametrize("data", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\n",
    b"GET /a\x00b HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Ctl: a\x01b\r\n\r\n",
    b"GET / FOO/1.1\r\nHost: t\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS ClientHello
], ids=["garbage", "no-colon", "cl-not-number", "cl-negative", "cl-list", "nul-in-target",
        "ctl-in-value", "bad-protocol-name", "bad-chunk-size", "tls-hello"])
def test_400_then_close(srv, data):
    status, closed = status_then_closed(srv, data)
    assert status == 400
    assert closed, "connection not closed after 400"


def test_408_on_header_timeout(srv):
    s = srv.connect()
    try:
        s.sendall(b"GET /hello?slow-headers HTTP/1.1\r\nHost: t\r\n")  # never finished
        data = wait_close(s)
        assert data is not None, "connection still open %ss after a 1s header timeout" % TIMEOUT
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
    finally:
        s.close()
    assert not [c for c in srv.calls() if "slow-headers" in c]


def test_idle_connection_closed_without_request(srv):
    s = srv.connect()
    try:
        assert is_closed(s), "an idle connection that never sent a byte stayed open"
    finally:
        s.close()


def test_idle_keepalive_connection_closed(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        r, body = read_response(f)
        assert body == b"Hello, world!"
        assert is_closed(s), "idle keep-alive connection not closed after keepalive-timeout"
    finally:
        f.close()
        s.close()


def test_body_timeout(srv):
    s = srv.connect()
    try:
        s.sendall(b"POST /body?tag=slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                  + b"x" * 10)
        data = wait_close(s)
        assert data is not None, "connection still open after the body timeout"
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
    finally:
        s.close()
    assert not [c for c in srv.calls() if "slow-body" in c], "incomplete body reached the app"


def test_send_timeout_closes_a_client_that_reads_nothing(srv):
    total = 64 << 20
    s = srv.connect(rcvbuf=16384)
    try:
        s.sendall(b"GET /gen?total=%d&cl=1 HTTP/1.1\r\nHost: t\r\n\r\n" % total)
        time.sleep(3)  # take nothing for longer than the 1s send timeout
        got = 0
        s.settimeout(TIMEOUT)
        try:
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += len(b)
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("connection still open after the send timeout")
        assert got < total, "the whole body arrived: the send timeout did not apply"
    finally:
        s.close()


def test_max_keepalive_requests(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" * 7)
        for i in range(5):
            r, body = read_response(f)
            assert r.status == 200 and body == b"Hello, world!"
        assert (r.getheader("Connection") or "").lower() == "close"
        assert f.read() == b"", "served more than max-keepalive-requests on one connection"
    finally:
        f.close()
        s.close()


def test_still_serving_after_all_that(srv):
    status, _, body = srv.get("/hello")
    assert status == 200 and body == b"Hello, world!"
    assert srv.alive()


def test_oversized_chunk_size_names_the_chunk_size(srv):
    # a chunk-size that overflows 64 bits: http-parser reports it as an
    # invalid content-length; the answer must talk about the chunk size
    data = (b"POST /body?tag=hugechunk HTTP/1.1\r\nHost: t\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\nxx\r\n0\r\n\r\n")
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(data)
        r, body = read_response(f)
    finally:
        f.close()
        s.close()
    assert r.status == 400, body
    assert b"chunk" in body.lower(), body
    assert b"content-length" not in body.lower(), body
    assert not [c for c in srv.calls() if "hugechunk" in c]
