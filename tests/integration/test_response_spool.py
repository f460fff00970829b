"""A response spool file that cannot be written (issue 9): a body sent with
write() to a reader that stopped must spool, and when the disk says no
(here RLIMIT_FSIZE: the file cannot grow past 1 MiB, which works as root
too), the app and the log are told what failed, not that the client went
away; the response is cut (the client can tell), the server keeps
serving."""
from zftest import read_head

MIB = 1 << 20


def test_spool_write_failure_is_reported_as_such(server_factory):
    srv = server_factory("--threads", "2", "--output-buffer", "64k", fsize=MIB, name="fsize")
    total = 16 * MIB
    s = srv.connect(rcvbuf=65536)
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /gen?total=%d&chunk=262144&cl=1&via=write&errors=spoolerr "
                  b"HTTP/1.1\r\nHost: h\r\n\r\n" % total)
        assert srv.wait_marker("spoolerr"), srv.log()[-3000:]
        with open(srv.marker("spoolerr")) as m:
            err = m.read().strip()
        assert err == "OSError 27", err  # EFBIG, not ConnectionAbortedError
        assert srv.wait_log(r"cannot write the response spool file in .*: File too large")
        assert srv.wait_log(r"OSError: \[Errno 27\] cannot spool the response")
        assert "client went away" not in srv.log()
        status, headers, _ = read_head(f)
        assert status == 200 and headers["content-length"] == str(total)
        got = 0
        try:
            while True:
                data = f.read1(1 << 20)
                if not data:
                    break
                got += len(data)
        except ConnectionResetError:
            pass
        assert got < total  # cut, and the connection closed: not a complete 200
    finally:
        f.close()
        s.close()
    assert srv.alive()
    status, _, body = srv.get("/hello")
    assert status == 200 and body == b"Hello, world!"


def test_first_chunk_that_cannot_be_queued_gives_500(server_factory):
    """With --output-buffer 0 every body byte goes to the spool file; when
    that cannot even be created (the tmp dir is gone), a single-chunk body
    was answered 200 with its Content-Length and no byte of it. The first
    bytes are now queued before the headers go out: nothing was sent, so
    the client gets a 500, and the log says why."""
    srv = server_factory("--threads", "2", "--output-buffer", "0", tmp_dir=False,
                         start=False, name="notmp")
    srv.args += ["--tmp-dir", srv.tmp + "/gone"]
    srv.start()
    for path in ("/hello", "/gen?total=3000&chunk=1000", "/gen?total=3000&chunk=1000&via=write"):
        status, _, body = srv.get(path)
        assert status == 500, (path, status, body)
    assert srv.wait_log(r"cannot create a response spool file in .*/gone: No such file")
    assert srv.wait_log(r"cannot queue the start of the response body")
    assert "client went away" not in srv.log()
    assert srv.alive()
