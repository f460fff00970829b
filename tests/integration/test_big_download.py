"""A 1 GiB file download, checked by sha256, while /hello keeps answering in
the middle of it — with a single worker thread, so the download can only be
going on in the loop, not in a worker."""
import hashlib
import os

import pytest

from zftest import TIMEOUT, write_random_file

SIZE = 1 << 30


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("--threads", "1", name="bigdl")
    s.big_sha = write_random_file(os.path.join(s.data, "big.bin"), SIZE)
    return s


def test_1gib_download_while_hello_answers(srv):
    c = srv.http(timeout=TIMEOUT)
    try:
        c.request("GET", "/file?name=big.bin&marker=big-closed")
        r = c.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Length") == str(SIZE)
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        h = hashlib.sha256()
        got = 0
        checked = 0
        while True:
            n = r.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
            got += n
            # several times during the download, the small page answers
            if checked < 4 and got >= (checked + 1) * (SIZE // 5):
                status, _, body = srv.get("/hello")
                assert status == 200 and body == b"Hello, world!"
                checked += 1
        assert checked == 4
        assert got == SIZE
        assert h.hexdigest() == srv.big_sha
    finally:
        c.close()
    assert srv.wait_marker("big-closed")


def test_ranged_read_from_the_big_file(srv):
    start = SIZE - (3 << 20) + 7
    status, headers, body = srv.get("/file?name=big.bin&ar=1",
                                    headers={"Range": "bytes=%d-%d" % (start, start + 99999)})
    assert status == 206 and len(body) == 100000
    with open(os.path.join(srv.data, "big.bin"), "rb") as f:
        f.seek(start)
        assert body == f.read(100000)
