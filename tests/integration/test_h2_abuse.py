"""HTTP/2 abuse: rapid reset (CVE-2023-44487), PING / SETTINGS / empty DATA
floods. The abusive connection is dropped with GOAWAY(ENHANCE_YOUR_CALM)
while a well-behaved client on another connection keeps being served.

Clients: python3-h2 (test_h2.H2Conn) and curl."""
import json
import os
import socket

import h2.errors
import h2.exceptions
import hpack
import hyperframe.frame
import pytest

from test_h2 import H2Conn, RawH2, start_h2
from zftest import TIMEOUT, curl, wait_until

CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@pytest.fixture
def srv(server_factory):
    return start_h2(server_factory, "--set", "h2.max_resets=100", "--set",
                    "h2.max_control_frames=300")


def _send_safely(c, frames_fn, n):
    """Calls frames_fn() n times, flushing each; stops when the server hung
    up. Returns how many were sent."""
    sent = 0
    try:
        for _ in range(n):
            frames_fn()
            c.flush()
            sent += 1
    except (OSError, h2.exceptions.ProtocolError):
        c.closed = True  # hung up, or python-h2 saw the GOAWAY already
    return sent


def _assert_dropped(c, srv, what):
    assert c.wait_closed(timeout=TIMEOUT), "abusive connection not closed"
    assert c.terminated is not None, "no GOAWAY before the close"
    assert c.terminated.error_code == CALM
    assert srv.wait_log(r"http2: \d+ %s.* within 10000 ms: dropping the connection" % what)


def _reset_pairs(raw, first, n):
    """n requests, each HEADERS(END_STREAM) and RST_STREAM(CANCEL) in one
    write of exactly 64 bytes (the HEADERS is padded; nothing is added to
    the HPACK table, so every block has the same size): the server's reads
    (4,096 or 16,384 bytes, or whole writes) never split a pair."""
    block = raw.enc.encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in [
        (":method", "GET"), (":path", "/hello?rr=1"),
        (":scheme", "https" if raw.tls else "http"), (":authority", "localhost")]])
    pad = 64 - 13 - 9 - 1 - len(block)
    assert pad >= 0
    for i in range(n):
        sid = first + 2 * i
        h = hyperframe.frame.HeadersFrame(sid, block, pad_length=pad)
        for flag in ("END_HEADERS", "END_STREAM", "PADDED"):
            h.flags.add(flag)
        pair = h.serialize() + hyperframe.frame.RstStreamFrame(sid, error_code=8).serialize()
        assert len(pair) == 64
        try:
            raw.sock.sendall(pair)
        except OSError:
            return


@pytest.mark.parametrize("tls", [True, False], ids=["h2", "h2c"])
def test_rapid_reset_drops_connection(srv, tls):
    port = srv.https_port if tls else srv.port
    good = H2Conn(port, tls=tls)
    try:
        assert good.get("/hello?who=good")[0] == 200
        bad = RawH2(port, tls=tls)
        # SETTINGS exchanged and a PING answered: the server has read all
        # bytes before the pairs, so each of its reads starts at a pair
        assert bad.until(lambda f: isinstance(f, hyperframe.frame.SettingsFrame) and
                         "ACK" not in f.flags)
        bad.send(hyperframe.frame.PingFrame(0, b"sync0000"))
        assert bad.until(lambda f: isinstance(f, hyperframe.frame.PingFrame) and
                         "ACK" in f.flags)
        _reset_pairs(bad, 1, 150)
        goaway = bad.until(lambda f: isinstance(f, hyperframe.frame.GoAwayFrame))
        assert goaway is not None and goaway.error_code == CALM
        # h2.max_resets=100: the 101st reset (stream 201) drops the connection
        assert goaway.last_stream_id == 201
        assert srv.wait_log(r"http2: 101 stream resets \(rapid reset\) within 10000 ms: "
                            r"dropping the connection")
        bad.close()
        # the well-behaved connection, opened before, is still served
        assert good.get("/hello?who=good-after")[0] == 200
    finally:
        good.close()
    # and new clients too
    assert curl("-k", "--http2", "https://127.0.0.1:%d/hello" % srv.https_port).stdout == \
        b"Hello, world!"
    # a request reset in the same read as its HEADERS never reaches the
    # application, and every pair arrived within one read
    assert curl("-k", "--http2", "https://127.0.0.1:%d/hello?rr=0" % srv.https_port).stdout == \
        b"Hello, world!"
    assert wait_until(lambda: any("rr=0" in line for line in srv.calls()))
    assert [line for line in srv.calls() if "rr=1" in line] == []


def test_normal_cancellations_are_fine(srv):
    """A browser-like client cancelling some streams is not abusive."""
    c = H2Conn(srv.port)
    try:
        for i in range(50):
            sid = c.request("/sleep?s=0.01&i=%d" % i)
            c.conn.reset_stream(sid)
            c.flush()
            assert c.get("/hello")[0] == 200
        assert not c.closed and c.terminated is None
    finally:
        c.close()


def test_resets_of_finished_streams_are_not_counted(srv):
    """RST_STREAM frames about streams the server already finished (a client answering
    frames that crossed its own reset, as python3-h2 does on a busy server) abort no
    work: 150 of them, past h2.max_resets=100, leave the connection up."""
    raw = RawH2(srv.port)
    try:
        for sid in (1, 3):
            raw.send(raw.headers(sid, "/hello"))
            end = raw.until(lambda f: f.stream_id == sid and "END_STREAM" in f.flags)
            assert end is not None
        for i in range(150):
            raw.send(hyperframe.frame.RstStreamFrame(1 + 2 * (i % 2), error_code=5))
        raw.send(raw.headers(5, "/hello"))
        end = raw.until(lambda f: isinstance(f, hyperframe.frame.GoAwayFrame) or
                        (f.stream_id == 5 and "END_STREAM" in f.flags))
        assert end is not None and not isinstance(end, hyperframe.frame.GoAwayFrame), end
    finally:
        raw.close()


def test_ping_flood_drops_connection(srv):
    good = H2Conn(srv.https_port, tls=True)
    bad = H2Conn(srv.https_port, tls=True)
    try:
        n = [0]

        def ping():
            n[0] += 1
            bad.conn.ping(n[0].to_bytes(8, "big"))

        # read while flooding, so this is the rate limit, not a full queue
        def ping_and_read():
            ping()
            if n[0] % 50 == 0:
                bad.flush()
                bad.pump(lambda: False, timeout=0.01)

        _send_safely(bad, ping_and_read, 1500)
        _assert_dropped(bad, srv, r"control frames")
        assert good.get("/hello")[0] == 200
    finally:
        good.close()
        bad.close()


def test_settings_flood_without_reading_drops_connection(srv):
    """SETTINGS frames from a client that never reads our ACKs."""
    bad = H2Conn(srv.port)
    bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        _send_safely(bad, lambda: bad.conn.update_settings({4: 65535}), 2000)
        _assert_dropped(bad, srv, r"control frames")
    finally:
        bad.close()
    assert curl("--http2-prior-knowledge", "http://127.0.0.1:%d/hello" % srv.port).stdout == \
        b"Hello, world!"


def test_empty_data_flood_drops_connection(srv):
    bad = H2Conn(srv.port)
    try:
        sid = bad.request("/body", method="POST", end=False)
        _send_safely(bad, lambda: bad.conn.send_data(sid, b""), 1500)
        _assert_dropped(bad, srv, r"control frames")
    finally:
        bad.close()


# ------------------------------------------------ header blocks (HPACK bomb)


def _continued(raw, sid, block, size=1024):
    """HEADERS carrying the first `size` bytes of block, then CONTINUATION
    frames of `size` bytes; END_STREAM on the HEADERS."""
    h = hyperframe.frame.HeadersFrame(sid, block[:size])
    h.flags.add("END_STREAM")
    frames = [h]
    for off in range(size, len(block), size):
        frames.append(hyperframe.frame.ContinuationFrame(sid, block[off:off + size]))
    frames[-1].flags.add("END_HEADERS")
    return frames


def test_big_header_section_in_small_continuations(srv):
    """A legitimate 37 KB header section (under h2.max_header_list_size,
    64k) cut into 1 KiB CONTINUATION frames is served: the defence counts
    bytes, not frames."""
    c = RawH2(srv.port)
    try:
        extra = [("x-big-%d" % i, os.urandom(500).hex()) for i in range(37)]
        block = c.block("/env?tag=continued", extra=extra)
        frames = _continued(c, 1, block)
        assert len(frames) > 20
        c.send(*frames)
        status, body = c.response(1)
    finally:
        c.close()
    assert status == 200, c.frames[-5:]
    env = json.loads(body)
    assert env["HTTP_X_BIG_36"] == extra[36][1]


@pytest.fixture
def hsrv(server_factory):
    return start_h2(server_factory, "--set", "h2.max_header_list_size=16k", "--set",
                    "h2.max_refused_headers=5", "--set", "h2.max_header_bytes=4m")


def test_refused_header_blocks_drop_the_connection(hsrv):
    """Each header list over h2.max_header_list_size gets 431; past
    h2.max_refused_headers (5) in the window the connection gets
    GOAWAY(ENHANCE_YOUR_CALM)."""
    c = RawH2(hsrv.port)
    try:
        extra = [("x-big-%d" % i, "v" * 1000) for i in range(20)]
        for i in range(5):
            sid = 1 + 2 * i
            c.send(*_continued(c, sid, c.block("/hello?tag=refused", extra=extra), 8192))
            assert c.response(sid)[0] == 431
        c.send(*_continued(c, 11, c.block("/hello?tag=refused", extra=extra), 8192))
        assert c.error_for(11) == ("goaway", CALM)
    finally:
        c.close()
    assert hsrv.wait_log(r"http2: 6 refused header blocks \(431\) within 10000 ms: dropping")
    assert not any("tag=refused" in ln for ln in hsrv.calls())


def test_hpack_bomb_drops_the_connection(hsrv):
    """A 4 KB header value put in the HPACK table once, then referenced 2,000
    times in one 2 KB header block (8 MB decoded): past h2.max_header_bytes
    (4m) of decoded header bytes the connection gets GOAWAY(ENHANCE_YOUR_CALM)
    at once, instead of nghttp2 expanding every reference."""
    c = RawH2(hsrv.port)
    try:
        c.send(c.headers(1, "/hello", extra=[("x-bomb", "b" * 4000)]))
        assert c.response(1) == (200, b"Hello, world!")
        # the 4 KB entry filled the 4 KB table: it is the only dynamic entry
        # (index 62) as long as nothing else is indexed
        assert c.enc.header_table.search(b"x-bomb", b"b" * 4000)[0] == 62
        block = c.enc.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in [
            (":method", "GET"), (":path", "/hello?tag=bomb"), (":scheme", "http"),
            (":authority", "localhost")]])
        block += bytes([0x80 | 62]) * 2000  # indexed field 62, 2,000 times
        c.send(*_continued(c, 3, block))
        assert c.error_for(3) == ("goaway", CALM)
    finally:
        c.close()
    assert hsrv.wait_log(r"http2: \d+ decoded header bytes.* within 10000 ms: dropping")
    assert not any("tag=bomb" in ln for ln in hsrv.calls())


def test_oversized_header_block_drops_the_connection(hsrv):
    """A header block (HEADERS + CONTINUATION) of more than twice
    h2.max_header_list_size (16k) on the wire: GOAWAY(ENHANCE_YOUR_CALM),
    not a silent close; the request never reaches the application."""
    c = RawH2(hsrv.port)
    try:
        extra = [("x-big-%d" % i, os.urandom(500).hex()) for i in range(60)]
        block = c.block("/hello?tag=hugeblock", extra=extra)
        assert len(block) > 32 * 1024
        c.send(*_continued(c, 1, block, 4096))
        assert c.error_for(1) == ("goaway", CALM)
    finally:
        c.close()
    assert hsrv.wait_log(r"http2: stream 1: header block over 32768 bytes: dropping")
    assert not any("tag=hugeblock" in ln for ln in hsrv.calls())
