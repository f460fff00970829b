"""Request smuggling: what Debian's non-strict http-parser lets through must
be refused by zfront itself with a 400 and a close — space before the colon,
non-token header names, bare LF / CR line ends, obs-fold, versions other than
1.0/1.1 — plus the framing conflicts the library already rejects. In every
case neither the request nor the request hidden behind it reaches the app."""
import socket

import pytest

from zftest import read_response

CASES = {
    # space/tab before the colon: http-parser would take this as chunked
    "te-space-before-colon": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                             b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-tab-before-colon": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                           b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    "cl-space-before-colon": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                             b"Content-Length : 5\r\n\r\nhello",
    # header names that are not tokens
    "name-with-space": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX Y: 1\r\n\r\n",
    "name-with-at": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX@Y: 1\r\n\r\n",
    "name-with-brackets": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\n[X]: 1\r\n\r\n",
    "name-with-quote": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX\"Y: 1\r\n\r\n",
    "name-with-slash": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX/Y: 1\r\n\r\n",
    "name-with-parens": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX(Y): 1\r\n\r\n",
    "name-utf8": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX\xc3\xa9: 1\r\n\r\n",
    "name-empty": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\n: 1\r\n\r\n",
    # bare LF / CR line endings
    "bare-lf-everywhere": b"GET /hello?{tag} HTTP/1.1\nHost: t\n\n",
    "bare-lf-after-request-line": b"GET /hello?{tag} HTTP/1.1\nHost: t\r\n\r\n",
    "bare-lf-in-headers": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n",
    "bare-lf-end-of-head": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\n\n",
    "bare-cr": b"GET /hello?{tag} HTTP/1.1\rHost: t\r\n\r\n",
    # obs-fold continuation lines
    "obs-fold-space": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX-Foo: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX-Foo: a\r\n\tb\r\n\r\n",
    "obs-fold-te": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n"
                   b"\r\n0\r\n\r\n",
    # versions other than 1.0 / 1.1
    "http-1.2": b"GET /hello?{tag} HTTP/1.2\r\nHost: t\r\n\r\n",
    "http-2.0": b"GET /hello?{tag} HTTP/2.0\r\nHost: t\r\n\r\n",
    "http-0.9": b"GET /hello?{tag} HTTP/0.9\r\nHost: t\r\n\r\n",
    "http-3.0": b"GET /hello?{tag} HTTP/3.0\r\nHost: t\r\n\r\n",
    "http-1.10": b"GET /hello?{tag} HTTP/1.10\r\nHost: t\r\n\r\n",
    # framing conflicts (http-parser rejects these itself; keep them rejected)
    "cl-and-te": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate-cl": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                    b"Content-Length: 5\r\n\r\nhello",
    "cl-plus-sign": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
    "te-not-chunked-last": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                           b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-unknown": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n"
                  b"\r\n0\r\n\r\n",
    "space-in-target": b"GET /hel lo?{tag} HTTP/1.1\r\nHost: t\r\n\r\n",
    # found by tests/fuzz/fuzz_http1 (http-parser 2.9.4 lets these through)
    "chunk-size-high-byte": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n3\x80\r\n" + b"x" * 48 + b"\r\n0\r\n\r\n",
    "chunk-size-only-high-byte": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n\x80\r\n\r\n",
    "chunk-data-without-crlf": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
    "chunk-size-garbage": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
    "chunk-ext-control": b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n5;a\x00b\r\nhello\r\n0\r\n\r\n",
    "value-starts-with-control": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nX: \x1b[31m\r\n\r\n",
    "version-name-not-http": b"GET /hello?{tag} HTxx/1.1\r\nHost: t\r\n\r\n",
    "upgrade-te-not-chunked": b"GET /hello?{tag} HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n"
                              b"Upgrade: foo\r\nTransfer-Encoding: gzip\r\n\r\n",
}

SMUGGLED = b"GET /hello?smuggled-{tag} HTTP/1.1\r\nHost: t\r\n\r\n"

# Refused with another status than 400, still closed, nothing reaches the app.
OTHER_STATUS = {
    # zfront opens no tunnel: the body of a CONNECT must never be read as the
    # next request
    "connect-with-body": (b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\nContent-Length: 38\r\n\r\n"
                          b"GET /hello?hidden-{tag} HTTP/1.1\r\n\r\n", 501),
    # an unsupported expectation stays refused whatever follows it
    "expect-unsupported-then-continue": (b"POST /echo?{tag} HTTP/1.1\r\nHost: t\r\n"
                                         b"Expect: something\r\nExpect: 100-continue\r\n"
                                         b"Content-Length: 5\r\n\r\nhello", 417),
}


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory(name="smuggling")


def assert_refused(srv, name, raw, status):
    """Sends raw (with a request hidden behind it): the answer is `status`,
    the connection then closes, and neither request reaches the app."""
    tag = name.encode()
    payload = raw.replace(b"{tag}", tag) + SMUGGLED.replace(b"{tag}", tag)
    s = srv.connect()
    f = s.makefile("rb")
    try:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r, body = read_response(f)
        assert r.status == status, "%s: got %d %r" % (name, r.status, body[:200])
        try:
            rest = f.read()
        except ConnectionResetError:
            rest = b""
        except socket.timeout:
            pytest.fail("%s: connection left open after the %d" % (name, status))
        assert rest == b"", "%s: more data after the %d: %r" % (name, status, rest[:200])
    finally:
        f.close()
        s.close()
    reached = [c for c in srv.calls() if name in c]
    assert not reached, "%s: reached the app: %s" % (name, reached)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rejected_with_400_and_close(srv, name):
    assert_refused(srv, name, CASES[name], 400)


def test_well_formed_variants_still_pass(srv):
    """The strictness must not refuse what is legal: OWS around values,
    HTTP/1.0, tchar-only odd names, an empty value."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:   5  \r\n"
                  b"X-Odd!#$%&'*+-.^_`|~Name: v\r\nX-Empty:\r\n\r\nhello")
        r, body = read_response(f)
        assert r.status == 200 and body == b"hello"
        s.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\nX-Tabbed:\tvalue\t\r\n\r\n")
        r, body = read_response(f)
        assert r.status == 200
        assert b'"HTTP_X_TABBED": "value"' in body
    finally:
        f.close()
        s.close()


def first_status(srv, payload):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(payload)
        r, _ = read_response(f)
        return r.status
    finally:
        f.close()
        s.close()


def test_missing_host_on_http11_is_400(srv):
    """RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request
    without Host."""
    assert first_status(srv, b"GET /hello?nohost HTTP/1.1\r\n\r\n") == 400
    assert not [c for c in srv.calls() if "nohost" in c]


def test_two_host_fields_is_400(srv):
    assert first_status(srv, b"GET /hello?twohosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert not [c for c in srv.calls() if "twohosts" in c]


def test_http10_without_host_is_fine(srv):
    assert first_status(srv, b"GET /hello HTTP/1.0\r\n\r\n") == 200


def test_server_alive(srv):
    assert srv.get("/hello")[2] == b"Hello, world!"


@pytest.mark.parametrize("name", sorted(OTHER_STATUS))
def test_refused_with_status_and_close(srv, name):
    raw, status = OTHER_STATUS[name]
    assert_refused(srv, name, raw, status)


def test_http10_with_transfer_encoding_closes(srv):
    """RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding ends with the
    connection, even when it asks for keep-alive."""
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        r, body = read_response(f)
        assert r.status == 200
        assert f.read() == b""
    finally:
        f.close()
        s.close()
