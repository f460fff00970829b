"""Logging: the access log in combined format (to a file, or "-" for
stderr), and the error log to a file with app tracebacks in it."""
import os
import re
import socket
import struct

import pytest

from zftest import curl, read_response, wait_until

COMBINED = re.compile(
    r'^(?P<addr>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:'
    r'\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')


def access_lines(path):
    try:
        with open(path) as f:
            return [ln.rstrip("\n") for ln in f if ln.strip()]
    except FileNotFoundError:
        return []


def find_line(lines, needle):
    for ln in lines:
        if needle in ln:
            return ln
    return None


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory(start=False, name="logging")
    s.access_path = os.path.join(s.root, "access.log")
    s.error_path = os.path.join(s.root, "error.log")
    s.args += ["--access-log", s.access_path, "--error-log", s.error_path]
    s.error_log = s.error_path
    return s.start()


def test_access_log_combined_format(srv):
    status, _, body = srv.get("/hello?x=1", headers={"Referer": "http://ref.example/page",
                                                     "User-Agent": "zf-test-agent/1.0"})
    assert status == 200
    line = wait_until(lambda: find_line(access_lines(srv.access_path), "/hello?x=1"))
    assert line, "no access-log line for the request"
    m = COMBINED.match(line)
    assert m, "not combined format: %r" % line
    assert m["addr"] == "127.0.0.1"
    assert m["ident"] == "-" and m["user"] == "-"
    assert m["request"] == "GET /hello?x=1 HTTP/1.1"
    assert m["status"] == "200"
    assert m["bytes"] == "13"
    assert m["referer"] == "http://ref.example/page"
    assert m["agent"] == "zf-test-agent/1.0"


def test_access_log_other_statuses(srv):
    srv.request("POST", "/no-such-route-for-log", body=b"abc")
    srv.get("/raise?tag=for-access-log")

    def both():
        found = [ln for ln in access_lines(srv.access_path)
                 if "no-such-route-for-log" in ln or "for-access-log" in ln]
        return found if len(found) >= 2 else None

    lines = wait_until(both)
    assert lines, access_lines(srv.access_path)
    for ln in lines:
        m = COMBINED.match(ln)
        assert m, ln
        if "no-such-route" in ln:
            assert m["request"] == "POST /no-such-route-for-log HTTP/1.1"
            assert m["status"] == "404"
            assert m["referer"] == "-"
        else:
            assert m["status"] == "500"


def test_access_log_head(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"HEAD /hello?head-logged HTTP/1.1\r\nHost: h\r\n\r\n")
        read_response(f, method="HEAD")
    finally:
        f.close()
        s.close()
    line = wait_until(lambda: find_line(access_lines(srv.access_path), "head-logged"))
    m = COMBINED.match(line or "")
    assert m and m["status"] == "200" and m["bytes"] in ("0", "-"), line


def test_malformed_request_is_logged(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nBad Name: 1\r\n\r\n")
        r, _ = read_response(f)
        assert r.status == 400
    finally:
        f.close()
        s.close()
    # a line saying what was wrong, in one of the logs
    assert wait_until(lambda: " 400 " in open(srv.access_path).read()
                      or re.search(r"(?i)header", srv.log()))


def test_error_log_to_file(srv):
    assert "listening on" in open(srv.error_path).read()
    srv.get("/raise?tag=into-error-log-file")
    assert wait_until(lambda: "into-error-log-file" in open(srv.error_path).read())
    with open(srv.stderr_path) as f:
        assert "into-error-log-file" not in f.read()


def test_access_log_to_stderr(server_factory):
    srv = server_factory("--access-log", "-", name="access-stderr")
    srv.get("/hello?to-stderr=1", headers={"User-Agent": "stderr-agent"})
    line = wait_until(lambda: find_line(srv.log().splitlines(), "/hello?to-stderr=1"))
    assert line and COMBINED.match(line), line


# -------------------------------------------------- REMOTE_USER (the app's user)


def user_field(srv, needle):
    line = wait_until(lambda: find_line(access_lines(srv.access_path), needle))
    assert line, access_lines(srv.access_path)
    m = COMBINED.match(line)
    assert m, line
    return m["user"]


@pytest.mark.parametrize("how", ["call", "close", "file"])
def test_access_log_remote_user_from_the_app(srv, how):
    """The user field is environ["REMOTE_USER"] as the app left it (Zope sets
    it when it authenticated the request), read after the app call and its
    close(), as Paste's TransLogger logs it; a file response too."""
    query = {"call": "user=alice", "close": "user=bob&when=close",
             "file": "user=carol&how=file"}[how]
    status, _, _ = srv.get("/user?" + query)
    assert status == 200
    assert user_field(srv, "/user?" + query) == query.split("&")[0][len("user="):]


def test_access_log_remote_user_escaped(srv):
    """A name with a space or a quote cannot break the line's fields."""
    status, _, _ = srv.get("/user?user=Jane%20%22JD%22%20Doe")
    assert status == 200
    assert user_field(srv, "/user?user=Jane%20") == r"Jane\x20\x22JD\x22\x20Doe"


def test_access_log_remote_user_over_h2(srv):
    p = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/user?user=dave&h2=1" % srv.port)
    assert p.stdout == b"user set"
    line = wait_until(lambda: find_line(access_lines(srv.access_path), "h2=1"))
    assert line and " HTTP/2\" 200 " in line, line
    assert COMBINED.match(line)["user"] == "dave"

def test_response_aborted_before_its_header_is_logged_499(srv):
    # the client leaves while the app is still working: nginx's 499
    s = srv.connect()
    s.sendall(b"GET /sleep?s=1&started=abort499&tag=abort499 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert srv.wait_marker("abort499")
    # a reset, not a half-close (which is legal: the response would be sent)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    line = wait_until(lambda: find_line(access_lines(srv.access_path), "tag=abort499"))
    assert line, access_lines(srv.access_path)[-5:]
    m = COMBINED.match(line)
    assert m, line
    assert m.group("request") == "GET /sleep?s=1&started=abort499&tag=abort499 HTTP/1.1"
    assert m.group("status") == "499" and m.group("bytes") == "0", line


def test_response_aborted_mid_body_is_logged_with_its_status_and_bytes(srv):
    total = 64 << 20
    s = srv.connect(rcvbuf=65536)
    s.sendall(b"GET /gen?total=%d&cl=1&tag=abortmid HTTP/1.1\r\nHost: t\r\n\r\n" % total)
    got = 0
    while got < 1 << 20:
        b = s.recv(65536)
        assert b
        got += len(b)
    s.close()  # unread data: the kernel sends a reset
    line = wait_until(lambda: find_line(access_lines(srv.access_path), "tag=abortmid"))
    assert line, access_lines(srv.access_path)[-5:]
    m = COMBINED.match(line)
    assert m, line
    assert m.group("status") == "200", line
    assert 0 < int(m.group("bytes")) < total, line
