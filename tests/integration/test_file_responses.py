"""File responses sent by the loop: wsgi.file_wrapper and any iterable with
fileno() (like Zope's filestream_iterator), from tell() up to the
Content-Length, HEAD, close() called; and single byte Range requests
answered 206/416 from the descriptor when the app sent Accept-Ranges."""
import json
import os

import pytest

from zftest import curl, read_head, read_response, sha256_hex, write_random_file

SIZE = (1 << 20) + 12345
LM = "Wed, 21 Oct 2015 07:28:00 GMT"


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("--threads", "2", name="files")
    write_random_file(os.path.join(s.data, "file.bin"), SIZE)
    open(os.path.join(s.data, "empty.bin"), "wb").close()
    with open(os.path.join(s.data, "file.bin"), "rb") as f:
        s.content = f.read()
    return s


HOWS = ["wrapper", "stream"]


@pytest.mark.parametrize("how", HOWS)
def test_full_file(srv, how):
    status, headers, body = srv.get("/file?how=%s&marker=full-%s" % (how, how))
    assert status == 200
    assert headers["Content-Length"] == str(SIZE)
    assert sha256_hex(body) == sha256_hex(srv.content)
    assert srv.wait_marker("full-" + how), "close() not called on the file object"


def test_file_wrapper_over_non_file_falls_back(srv):
    status, headers, body = srv.get("/file?how=bytesio")
    assert status == 200 and body == srv.content


@pytest.mark.parametrize("how", HOWS)
def test_content_length_honoured(srv, how):
    """The app says 1000 bytes of a bigger file: exactly 1000 go out and the
    connection stays in sync for the next request."""
    c = srv.http()
    try:
        c.request("GET", "/file?how=%s&cl=1000" % how)
        r = c.getresponse()
        assert r.getheader("Content-Length") == "1000"
        assert r.read() == srv.content[:1000]
        c.request("GET", "/hello")
        assert c.getresponse().read() == b"Hello, world!"
    finally:
        c.close()


@pytest.mark.parametrize("how", HOWS)
def test_sent_from_current_position(srv, how):
    status, headers, body = srv.get("/file?how=%s&seek=5000" % how)
    assert headers["Content-Length"] == str(SIZE - 5000)
    assert body == srv.content[5000:]
    status, headers, body = srv.get("/file?how=%s&seek=5000&cl=100" % how)
    assert body == srv.content[5000:5100]


@pytest.mark.parametrize("how", HOWS)
def test_file_without_content_length(srv, how):
    status, headers, body = srv.get("/file?how=%s&cl=none" % how)
    assert status == 200 and body == srv.content


@pytest.mark.parametrize("how", HOWS)
def test_head_on_file(srv, how):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"HEAD /file?how=%s&marker=head-%s HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n" % (how.encode(), how.encode()))
        status, headers, _ = read_head(f)
        assert status == 200 and headers["content-length"] == str(SIZE)
        status, headers, raw = read_head(f)
        assert raw.startswith(b"HTTP/1.1 200"), raw[:100]
        assert f.read(13) == b"Hello, world!"
    finally:
        f.close()
        s.close()
    assert srv.wait_marker("head-" + how)


def test_empty_file(srv):
    status, headers, body = srv.get("/file?name=empty.bin")
    assert status == 200 and headers["Content-Length"] == "0" and body == b""


def test_many_files_one_connection(srv):
    c = srv.http()
    try:
        for i in range(20):
            c.request("GET", "/file?how=%s&seek=%d&cl=%d" % (HOWS[i % 2], i * 1000, 777))
            r = c.getresponse()
            assert r.read() == srv.content[i * 1000:i * 1000 + 777]
    finally:
        c.close()


# ----------------------------------------------------------------------- Range


def ranged(srv, rng, query="ar=1", extra=None):
    headers = {"Range": rng}
    headers.update(extra or {})
    return srv.get("/file?" + query, headers=headers)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("rng,start,end", [
    ("bytes=100-199", 100, 199),
    ("bytes=0-0", 0, 0),
    ("bytes=-500", SIZE - 500, SIZE - 1),
    ("bytes=%d-" % (SIZE - 10), SIZE - 10, SIZE - 1),
    ("bytes=0-", 0, SIZE - 1),
    ("bytes=1000-999999999", 1000, SIZE - 1),
    ("bytes=-999999999", 0, SIZE - 1),
])
def test_range_206(srv, how, rng, start, end):
    status, headers, body = ranged(srv, rng, "ar=1&how=" + how)
    assert status == 206, (rng, status)
    assert headers["Content-Range"] == "bytes %d-%d/%d" % (start, end, SIZE)
    assert headers["Content-Length"] == str(end - start + 1)
    assert body == srv.content[start:end + 1]


@pytest.mark.parametrize("rng", ["bytes=%d-" % SIZE, "bytes=2000000-3000000",
                                 "bytes=%d-%d" % (SIZE + 5, SIZE + 10)])
def test_range_416(srv, rng):
    status, headers, body = ranged(srv, rng)
    assert status == 416, (rng, status)
    assert headers["Content-Range"] == "bytes */%d" % SIZE
    assert srv.get("/hello")[2] == b"Hello, world!"


@pytest.mark.parametrize("rng", ["bytes=0-1,5-6", "bytes=abc", "items=0-5", "bytes=5-1",
                                 "bytes=", "bytes=--5"])
def test_range_ignored_gives_full_200(srv, rng):
    status, headers, body = ranged(srv, rng)
    assert status == 200, (rng, status)
    assert body == srv.content


def test_range_opt_out_without_accept_ranges(srv):
    status, headers, body = ranged(srv, "bytes=100-199", query="ar=0")
    assert status == 200
    assert "Content-Range" not in headers
    assert body == srv.content


def test_range_not_applied_to_generated_body(srv):
    status, headers, body = srv.get("/gen?total=5000&cl=1&ar=1", headers={"Range": "bytes=0-9"})
    assert status == 200 and len(body) == 5000


def test_if_range_matching_etag(srv):
    status, headers, body = ranged(srv, "bytes=10-19", 'ar=1&etag=%22v1%22', {"If-Range": '"v1"'})
    assert status == 206 and body == srv.content[10:20]


def test_if_range_mismatching_etag(srv):
    status, headers, body = ranged(srv, "bytes=10-19", 'ar=1&etag=%22v1%22', {"If-Range": '"v2"'})
    assert status == 200 and body == srv.content


def test_if_range_weak_etag_never_matches(srv):
    status, headers, body = ranged(srv, "bytes=10-19", 'ar=1&etag=W/%22v1%22',
                                   {"If-Range": 'W/"v1"'})
    assert status == 200 and body == srv.content


def test_if_range_matching_date(srv):
    status, headers, body = ranged(srv, "bytes=10-19", "ar=1&lm=" + LM.replace(" ", "%20"),
                                   {"If-Range": LM})
    assert status == 206 and body == srv.content[10:20]
    assert headers["Content-Range"] == "bytes 10-19/%d" % len(srv.content)


def test_if_range_mismatching_date(srv):
    status, headers, body = ranged(srv, "bytes=10-19", "ar=1&lm=" + LM.replace(" ", "%20"),
                                   {"If-Range": "Thu, 22 Oct 2015 07:28:00 GMT"})
    assert status == 200 and body == srv.content


def test_range_with_curl(srv):
    p = curl("-r", "10-19", "-D", "-", srv.url("/file?ar=1"))
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert body == srv.content[10:20]


def test_range_then_keepalive(srv):
    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /file?ar=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=5-9\r\n\r\n"
                  b"GET /file?ar=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=%d-\r\n\r\n"
                  b"GET /env HTTP/1.1\r\nHost: h\r\n\r\n" % SIZE)
        r, body = read_response(f)
        assert r.status == 206 and body == srv.content[5:10]
        r, body = read_response(f)
        assert r.status == 416
        r, body = read_response(f)
        assert r.status == 200 and json.loads(body)["PATH_INFO"] == "/env"
    finally:
        f.close()
        s.close()


def test_ranges_switched_off_by_config(server_factory):
    """wsgi.ranges = false: the admin's switch wins over the app's
    Accept-Ranges; the whole file goes out with 200."""
    s = server_factory("--set", "wsgi.ranges=false", name="noranges")
    write_random_file(os.path.join(s.data, "file.bin"), SIZE)
    status, headers, body = s.get("/file?ar=1", headers={"Range": "bytes=0-99"})
    assert status == 200
    assert "Content-Range" not in headers
    assert len(body) == SIZE
