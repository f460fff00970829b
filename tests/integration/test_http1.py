"""HTTP/1.1 protocol behaviour: keep-alive, pipelining, chunked bodies both
ways, Expect: 100-continue, HEAD, Connection: close, HTTP/1.0 clients and
arbitrary method tokens."""
import json
import os

import pytest

from zftest import curl, gen_expected, is_closed, read_head, read_response, sha256_hex


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("--max-body-size", "1m", name="http1")


def dechunk(rfile):
    """Reads a chunked body from rfile strictly; returns (body, trailers raw).
    Fails the test on any framing error."""
    body = bytearray()
    while True:
        line = rfile.readline(1000)
        assert line.endswith(b"\r\n"), "bad chunk-size line %r" % line
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            break
        data = rfile.read(size)
        assert len(data) == size
        body += data
        assert rfile.read(2) == b"\r\n", "chunk data not followed by CRLF"
    trailers = b""
    while True:
        line = rfile.readline(1000)
        assert line, "connection closed inside the trailer section"
        if line == b"\r\n":
            break
        trailers += line
    return bytes(body), trailers


# ------------------------------------------------------------------ keep-alive


def test_keepalive_two_requests_one_socket(srv):
    c = srv.http()
    try:
        c.request("GET", "/hello")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"Hello, world!"
        assert (r.getheader("Connection") or "").lower() != "close"
        sock = c.sock
        assert sock is not None, "client saw the connection closed after a keep-alive response"
        c.request("GET", "/method")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"GET 0"
        assert c.sock is sock, "second request did not use the same connection"
    finally:
        c.close()


def test_keepalive_many_requests_raw(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        for i in range(20):
            s.sendall(b"GET /method?i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            r, body = read_response(f)
            assert r.status == 200 and body == b"GET 0"
    finally:
        f.close()
        s.close()


def test_keepalive_with_curl(srv):
    p = curl("-v", srv.url("/hello"), srv.url("/hello"))
    assert p.stdout == b"Hello, world!" * 2
    assert "Re-using existing connection" in p.stderr, p.stderr


# ------------------------------------------------------------------ pipelining


def test_pipelining_in_order(srv):
    """Several requests in one send; the first is slow (the app sleeps), so
    a server that answers in completion order would reorder them."""
    reqs = (b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 14\r\n\r\npipelined-body"
            b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"
            b"PUT /method HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /gen?total=5000&chunk=1000 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /method?last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(reqs)
        expected = [("GET", b"slept 0.5"), ("GET", b"Hello, world!"),
                    ("POST", b"pipelined-body"), ("HEAD", b""), ("PUT", b"PUT 3"),
                    ("GET", None), ("GET", b"GET 0")]
        for method, want in expected:
            r, body = read_response(f, method=method)
            assert r.status == 200, (method, r.status, body)
            if want is None:
                assert len(body) == 5000 and sha256_hex(body) == gen_expected(5000, 1000)
            else:
                assert body == want
            if method == "HEAD":
                assert r.getheader("Content-Length") == "13"
        assert f.read() == b"", "data after the last (Connection: close) response"
    finally:
        f.close()
        s.close()


def test_pipelining_many_small(srv):
    n = 50
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"".join(b"GET /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%d"
                           % (len(str(i)), i) for i in range(n)))
        for i in range(n):
            r, body = read_response(f)
            assert r.status == 200 and body == str(i).encode()
    finally:
        f.close()
        s.close()


# ----------------------------------------------------------------- chunked in


def test_chunked_request_body_raw(srv):
    payload = os.urandom(50000)
    chunks = [payload[:1], payload[1:4097], payload[4097:30000], payload[30000:]]
    # a chunk extension on one chunk, upper-case hex on the others
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) if i == 1
                    else b"%X\r\n%s\r\n" % (len(c), c) for i, c in enumerate(chunks))
    wire += b"0\r\nX-Trailer: yes\r\n\r\n"
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/octet-stream\r\n\r\n" + wire)
        r, body = read_response(f)
        assert r.status == 200, body
        info = json.loads(body)
        assert info["len"] == len(payload)
        assert info["sha256"] == sha256_hex(payload)
        assert info["content_length"] == str(len(payload)), "no CONTENT_LENGTH after de-chunking"
        assert info["after_eof"] == 0
        # the connection is still usable after a chunked request
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        r, body = read_response(f)
        assert body == b"Hello, world!"
    finally:
        f.close()
        s.close()


def test_chunked_request_body_http_client(srv):
    parts = [b"line %d\n" % i * 10 for i in range(200)]
    data = b"".join(parts)
    c = srv.http()
    try:
        c.request("POST", "/body?mode=readline", body=iter(parts), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        info = json.loads(r.read())
        assert r.status == 200
        assert (info["len"], info["sha256"]) == (len(data), sha256_hex(data))
        assert info["content_length"] == str(len(data))
    finally:
        c.close()


def test_chunked_request_body_curl(srv):
    data = os.urandom(300000)
    path = os.path.join(srv.data, "chunked-upload.bin")
    with open(path, "wb") as fh:
        fh.write(data)
    p = curl("-H", "Transfer-Encoding: chunked", "-H", "Expect:", "--data-binary", "@" + path,
             srv.url("/body"))
    info = json.loads(p.stdout)
    assert (info["len"], info["sha256"]) == (len(data), sha256_hex(data))
    assert info["content_length"] == str(len(data))


def test_empty_chunked_request_body(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        r, body = read_response(f)
        info = json.loads(body)
        assert info["len"] == 0 and info["content_length"] in ("0", None, "")
    finally:
        f.close()
        s.close()


# ---------------------------------------------------------------- chunked out


def test_chunked_response_http11(srv):
    total = 100000
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /gen?total=%d&chunk=7000 HTTP/1.1\r\nHost: t\r\n\r\n" % total)
        status, headers, _ = read_head(f)
        assert status == 200
        assert headers.get("transfer-encoding", "").lower() == "chunked", headers
        assert "content-length" not in headers
        body, _ = dechunk(f)
        assert len(body) == total and sha256_hex(body) == gen_expected(total, 7000)
        # keep-alive survives a chunked response
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        r, body = read_response(f)
        assert body == b"Hello, world!"
    finally:
        f.close()
        s.close()


def test_chunked_response_write_callable(srv):
    """write() plus a returned iterable, without Content-Length: chunked."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /write HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = read_head(f)
        assert headers.get("transfer-encoding", "").lower() == "chunked"
        body, _ = dechunk(f)
        assert body == b"written;written again;returned;end"
    finally:
        f.close()
        s.close()


def test_close_delimited_response_http10(srv):
    total = 100000
    s = srv.connect()
    try:
        s.sendall(b"GET /gen?total=%d&chunk=7000 HTTP/1.0\r\n\r\n" % total)
        f = s.makefile("rb")
        status, headers, raw = read_head(f)
        assert raw.startswith(b"HTTP/1."), raw
        assert status == 200
        assert "chunked" not in headers.get("transfer-encoding", ""), "chunked sent to HTTP/1.0"
        assert "content-length" not in headers, "generated body was buffered to count it"
        body = f.read()  # until the server closes
        assert len(body) == total and sha256_hex(body) == gen_expected(total, 7000)
        f.close()
    finally:
        s.close()


# ---------------------------------------------------------- Expect: 100-continue


def test_expect_100_continue(srv):
    data = os.urandom(200000)
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % len(data))
        line = f.readline()  # blocks (bounded by the socket timeout) until the 100
        assert line.startswith(b"HTTP/1.1 100"), line
        assert f.readline() == b"\r\n"
        s.sendall(data)
        r, body = read_response(f)
        info = json.loads(body)
        assert r.status == 200 and info["sha256"] == sha256_hex(data)
    finally:
        f.close()
        s.close()


def test_expect_100_continue_too_big_gets_413_at_once(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /body?tag=expect413 HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        status, headers, raw = read_head(f)  # no body sent: the answer comes anyway
        assert status == 413, raw
    finally:
        f.close()
        s.close()
    assert not [c for c in srv.calls() if "expect413" in c]


# ------------------------------------------------------------------------ HEAD


def test_head_then_get_on_one_connection(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = read_head(f)
        assert status == 200 and headers.get("content-length") == "13"
        # the very next bytes must be the GET's response, not a body
        status, headers, raw = read_head(f)
        assert status == 200, raw
        assert f.read(13) == b"Hello, world!"
    finally:
        f.close()
        s.close()


def test_head_on_generated_body_sends_no_body(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"HEAD /gen?total=300000 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = read_head(f)
        assert status == 200
        status, headers, raw = read_head(f)
        assert status == 200 and raw.startswith(b"HTTP/1.1 200"), raw
        assert f.read(13) == b"Hello, world!"
    finally:
        f.close()
        s.close()


def test_head_calls_close(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"HEAD /close?marker=head-close HTTP/1.1\r\nHost: t\r\n\r\n")
        r, body = read_response(f, method="HEAD")
        assert r.status == 200 and body == b""
        assert r.getheader("Content-Length") == "30"
    finally:
        f.close()
        s.close()
    assert srv.wait_marker("head-close"), "close() not called for a HEAD response"


# ----------------------------------------------------------- Connection: close


def test_connection_close(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r, body = read_response(f)
        assert body == b"Hello, world!"
        assert (r.getheader("Connection") or "").lower() == "close"
        assert is_closed(s)
    finally:
        f.close()
        s.close()


# -------------------------------------------------------------------- HTTP/1.0


def test_http10_client_raw(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        r, body = read_response(f)
        assert r.status == 200 and body == b"Hello, world!"
        assert is_closed(s), "HTTP/1.0 request without keep-alive left the connection open"
    finally:
        f.close()
        s.close()


def test_http10_client_curl(srv):
    p = curl("--http1.0", "-i", srv.url("/env"))
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.")
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_http10_post_with_body(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
        r, body = read_response(f)
        assert r.status == 200 and body == b"hello"
    finally:
        f.close()
        s.close()


def test_http10_keepalive_opt_in(srv):
    """An HTTP/1.0 client asking for keep-alive (ab, old proxies) keeps the
    connection for responses with a length; a generated body without one
    must still end by closing."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r, body = read_response(f)
        assert body == b"Hello, world!"
        assert (r.getheader("Connection") or "").lower() == "keep-alive"
        s.sendall(b"GET /gen?total=3000&chunk=1000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_head(f)
        assert "content-length" not in headers and "transfer-encoding" not in headers
        assert f.read() == bytes(1000) + bytes([1]) * 1000 + bytes([2]) * 1000
    finally:
        f.close()
        s.close()


# --------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH", "MKCOL", "LOCK", "UNLOCK", "COPY",
                                    "MOVE", "OPTIONS", "PATCH", "DELETE", "PUT", "REPORT",
                                    "FROBNICATE", "X-CUSTOM_1"])
def test_any_method_token_reaches_app(srv, method):
    body = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"%s /method HTTP/1.1\r\nHost: t\r\nDepth: 1\r\nContent-Length: %d\r\n\r\n%s"
                  % (method.encode(), len(body), body))
        r, data = read_response(f)
        assert r.status == 200, data
        assert data == b"%s %d" % (method.encode(), len(body))
    finally:
        f.close()
        s.close()


def test_absolute_form_target(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET http://127.0.0.1:%d/hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                  % srv.port)
        r, body = read_response(f)
        assert r.status == 200 and body == b"Hello, world!"
    finally:
        f.close()
        s.close()


def test_not_found_from_app_keeps_connection(srv):
    c = srv.http()
    try:
        c.request("GET", "/no/such/route")
        r = c.getresponse()
        assert r.status == 404
        r.read()
        c.request("GET", "/hello")
        assert c.getresponse().read() == b"Hello, world!"
    finally:
        c.close()

