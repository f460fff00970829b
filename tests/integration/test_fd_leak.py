"""No descriptor leak: 1,000 downloads aborted at every stage (before the
response, after the head, mid-body; with FIN or RST; file bodies, suspended
generated bodies and spooled write() bodies) leave the server with the
descriptors it had before, and no descriptor on a (deleted) spool file."""
import os
import socket
import struct
import time

import pytest

from zftest import wait_until, write_random_file

ROUNDS = 1000
SLACK = 8


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("--threads", "4", "--output-buffer", "256k", name="fdleak")
    write_random_file(os.path.join(s.data, "big.bin"), 32 << 20)
    return s


def abort_one(srv, i):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", srv.port))
        if i % 5 == 4:
            via = b"&via=write" if i % 10 == 9 else b""  # write() bodies spool
            req = b"GET /gen?total=%d&chunk=65536%s HTTP/1.1\r\nHost: h\r\n\r\n" % (3 << 20, via)
        else:
            req = b"GET /file?name=big.bin&how=%s HTTP/1.1\r\nHost: h\r\n\r\n" % (
                b"wrapper" if i % 2 else b"stream")
        stage = i % 3
        s.sendall(req)
        if stage >= 1:
            s.recv(200)          # the head has started
        if stage == 2:
            left = 300000        # well into the body
            while left > 0:
                b = s.recv(min(left, 65536))
                if not b:
                    break
                left -= len(b)
    finally:
        if i % 4 < 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def settle(srv, baseline):
    """Waits (bounded) until the server is back to baseline descriptors."""
    return wait_until(lambda: srv.fd_count() <= baseline + SLACK, timeout=20, interval=0.2)


def test_no_fd_leak_after_1000_aborted_downloads(srv):
    # warm up: imports, worker thread states, first spool, log files
    for i in range(20):
        abort_one(srv, i)
    for _ in range(5):
        assert srv.get("/hello")[2] == b"Hello, world!"
    time.sleep(1)  # let the warm-up aborts finish
    baseline = srv.fd_count()
    before = srv.fds()

    for i in range(ROUNDS):
        abort_one(srv, i)

    assert srv.get("/hello")[2] == b"Hello, world!"
    ok = settle(srv, baseline)
    after = srv.fds()
    leaked = {fd: t for fd, t in after.items() if before.get(fd) != t}
    assert ok, "fds before %d, after %d; new: %s" % (baseline, len(after),
                                                     sorted(leaked.items())[:30])
    # spool files are unlinked at creation: the tmp dir never shows them, the
    # server's descriptors on deleted files do
    assert wait_until(lambda: not srv.spool_fds(), timeout=20), srv.spool_fds()
    assert srv.alive()
