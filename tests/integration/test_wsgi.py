"""WSGI (PEP 3333) as the app sees it: the environ, wsgi.errors into the
error log, start_response with exc_info, the write() callable, close()
always called, and errors in the app answered with a 500 and a logged
traceback while the server keeps serving."""
import json
import socket
import struct
import uuid

import pytest

from zftest import read_head, read_response


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("--threads", "4", "--log-level", "info", name="wsgi")


def raw(srv, request):
    """One request on a raw socket; returns (HTTPResponse, body, local_port)."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(request)
        r, body = read_response(f, method=request.split(b" ", 1)[0].decode())
        return r, body, s.getsockname()[1]
    finally:
        f.close()
        s.close()


def read_raw_until_close(srv, request):
    """Sends a request; returns (status, headers, body bytes until close,
    closed:bool)."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(request)
        status, headers, _ = read_head(f)
        body = b""
        closed = False
        try:
            while True:
                b = f.read1(65536)
                if not b:
                    closed = True
                    break
                body += b
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        return status, headers, body, closed
    finally:
        f.close()
        s.close()


# --------------------------------------------------------------------- environ


def test_environ(srv):
    r, body, local_port = raw(
        srv, b"POST /env/a%20b/%C3%A9?x=1&y=%20z HTTP/1.1\r\nHost: example.test:8080\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n"
             b"X-Custom-Thing: hello\r\nX-Multi: a\r\nX-Multi: b\r\n\r\nbody")
    assert r.status == 200
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "POST"
    # PATH_INFO is percent-decoded, and as a WSGI "native string" carries the
    # raw bytes as latin-1
    assert env["PATH_INFO"].encode("latin-1") == b"/env/a b/\xc3\xa9"
    assert env["SCRIPT_NAME"] == ""
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"]
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert env["CONTENT_LENGTH"] == "4"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_HOST"] == "example.test:8080"
    assert env["HTTP_X_CUSTOM_THING"] == "hello"
    assert env["HTTP_X_MULTI"] in ("a, b", "a,b")
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["zfront.channel"] == "http"
    assert all(env["_input_has"].values()), env["_input_has"]
    assert all(env["_errors_has"].values()), env["_errors_has"]
    assert env["_file_wrapper"] is True


def test_environ_get_without_body(srv):
    r, body, _ = raw(srv, b"GET /env HTTP/1.1\r\nHost: h\r\n\r\n")
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == ""
    assert env.get("CONTENT_LENGTH") in (None, "", "0")


def test_wsgi_errors_go_to_error_log(srv):
    tag = uuid.uuid4().hex
    r, body, _ = raw(srv, b"GET /env?errors=%s HTTP/1.1\r\nHost: h\r\n\r\n" % tag.encode())
    assert r.status == 200
    assert srv.wait_log("wsgi.errors says " + tag), srv.log()[-3000:]


# ------------------------------------------------------------ errors in the app


def test_exception_in_app_gives_500_and_traceback(srv):
    # more failures than workers: no worker may die
    tags = [uuid.uuid4().hex for _ in range(10)]
    for tag in tags:
        status, _, body = srv.get("/raise?tag=" + tag)
        assert status == 500
        assert tag.encode() not in body, "traceback details leaked to the client"
    for tag in tags:
        assert srv.wait_log("RuntimeError: app failure on purpose " + tag)
    assert "Traceback (most recent call last)" in srv.log()
    for _ in range(8):
        assert srv.get("/hello")[2] == b"Hello, world!"


def test_exception_after_start_response_before_body_gives_500(srv):
    tag = uuid.uuid4().hex
    status, _, _ = srv.get("/raise-after-start?tag=" + tag)
    assert status == 500
    assert srv.wait_log("ValueError: failed after start_response " + tag)


def test_start_response_with_exc_info_replaces_headers(srv):
    status, headers, body = srv.get("/exc-info")
    assert status == 500
    assert body == b"replaced by exc_info"
    assert headers.get("X-Replaced") == "yes"
    assert headers.get("X-First") is None


@pytest.mark.parametrize("route", ["start-twice", "bad-str", "no-start"])
def test_protocol_violations_give_500(srv, route):
    status, _, body = srv.get("/" + route)
    assert status == 500, (route, body)
    assert srv.get("/hello")[2] == b"Hello, world!"


def test_exc_info_after_body_started_truncates(srv):
    """Once the headers went out, exc_info can't change them: the response
    must end in a way the client sees as broken (no final chunk)."""
    status, headers, body, closed = read_raw_until_close(
        srv, b"GET /exc-info-late HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200
    assert closed, "connection kept open after a failed response"
    assert b"first part;" in body
    assert b"never sent" not in body
    if headers.get("transfer-encoding") == "chunked":
        assert not body.endswith(b"0\r\n\r\n"), "failed body ended with a clean last chunk"


def test_failure_mid_body_with_content_length_closes(srv):
    status, headers, body, closed = read_raw_until_close(
        srv, b"GET /fail-mid-body?cl=29&marker=midbody-cl HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200 and headers.get("content-length") == "29"
    assert closed and len(body) < 29
    assert srv.wait_marker("midbody-cl"), "close() not called after iteration failed"


def test_failure_mid_body_chunked_closes(srv):
    status, headers, body, closed = read_raw_until_close(
        srv, b"GET /fail-mid-body?marker=midbody-chunked HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200
    assert closed
    assert not body.endswith(b"0\r\n\r\n")
    assert srv.wait_marker("midbody-chunked")


def test_short_body_closes_connection(srv):
    """The app declared Content-Length: 100 and produced 10 bytes: the
    connection must not be reused as if the response were complete."""
    status, headers, body, closed = read_raw_until_close(
        srv, b"GET /short-body HTTP/1.1\r\nHost: h\r\n\r\n"
             b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 200
    assert closed
    assert body == b"only ten..", body


# ---------------------------------------------------------- write() and close()


def test_write_callable(srv):
    status, headers, body = srv.get("/write?marker=write-close")
    assert status == 200
    assert body == b"written;written again;returned;end"
    assert srv.wait_marker("write-close")


def test_write_callable_with_content_length(srv):
    c = srv.http()
    try:
        c.request("GET", "/write?cl=34")
        r = c.getresponse()
        assert r.getheader("Content-Length") == "34"
        assert r.read() == b"written;written again;returned;end"
        c.request("GET", "/hello")  # same connection still in sync
        assert c.getresponse().read() == b"Hello, world!"
    finally:
        c.close()


def test_close_called_after_normal_response(srv):
    status, _, body = srv.get("/close?marker=normal-close")
    assert body == b"a" * 10 + b"b" * 10 + b"c" * 10
    assert srv.wait_marker("normal-close")


def test_close_called_when_client_disconnects(srv):
    """The client goes away in the middle of a big generated body: the
    iterable's close() still runs."""
    s = srv.connect()
    try:
        s.sendall(b"GET /gen?total=500000000&marker=abort-close HTTP/1.1\r\nHost: h\r\n\r\n")
        assert s.recv(1000)
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert srv.wait_marker("abort-close", timeout=30), "close() not called after client abort"
    assert srv.get("/hello")[2] == b"Hello, world!"



# ------------------------------------------------------- close() that raises


@pytest.mark.parametrize("cl", [None, "21"], ids=["chunked", "content-length"])
def test_close_raising_after_complete_body_keeps_response(srv, cl):
    """The body went out complete and then close() raised: the error is
    logged, and the response still ends properly (last chunk sent, the
    connection reusable) instead of being cut."""
    q = b"?cl=" + cl.encode() if cl else b""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /close-raises%s HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n" % q)
        r, body = read_response(f)
        assert r.status == 200 and body == b"part one;part two;end"
        if cl is None:
            assert r.getheader("Transfer-Encoding") == "chunked"
        r2, body2 = read_response(f)  # same connection: it was not closed
        assert r2.status == 200 and body2 == b"Hello, world!"
    finally:
        f.close()
        s.close()
    assert srv.wait_log(r"close\(\) failing on purpose")


# ------------------------------------------------------- framing of 204, 304


@pytest.mark.parametrize("code", [204, 304])
@pytest.mark.parametrize("cl", ["0", "5", None])
def test_no_content_length_on_204_and_304_http1(srv, code, cl):
    """RFC 9110 8.6: 204 never has a Content-Length, and a 304's could only
    repeat the 200's length, which the server cannot know: neither goes out
    with the app's value."""
    q = "/status?code=%d" % code + ("&cl=" + cl if cl is not None else "")
    r, body, _ = raw(srv, b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % q.encode())
    assert r.status == code and body == b""
    assert r.getheader("Content-Length") is None, r.getheaders()
    assert r.getheader("Transfer-Encoding") is None
    assert r.getheader("ETag") == '"v1"'


@pytest.mark.parametrize("code", [204, 304])
def test_no_content_length_on_204_and_304_h2(srv, code):
    from zftest import curl
    p = curl("--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
             srv.url("/status?code=%d&cl=0" % code))
    head = p.stdout.decode("latin-1").lower()
    assert head.startswith("http/2 %d" % code), head
    assert "content-length" not in head, head


# --------------------------------------------------------------- fragments


@pytest.mark.parametrize("target,path,query", [
    (b"/env#frag", "/env", ""),
    (b"/env?a=1#frag", "/env", "a=1"),
    (b"/env?a=1#frag?b=2", "/env", "a=1"),
    (b"/env/x%23y?c=%23", "/env/x#y", "c=%23"),
])
def test_fragment_never_reaches_the_app(srv, target, path, query):
    """A client must not send a #fragment; one that does gets it dropped,
    not mixed into PATH_INFO or QUERY_STRING (an encoded %23 stays)."""
    r, body, _ = raw(srv, b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target)
    assert r.status == 200
    env = json.loads(body)
    assert env["PATH_INFO"] == path and env["QUERY_STRING"] == query
    assert "#" not in env.get("REQUEST_URI", "").replace("%23", "")
