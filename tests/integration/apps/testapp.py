"""The WSGI application the integration tests run inside zfront.

One callable, `application`, routed on the first path segment. Every call is
appended to $ZF_TEST_MARKERS/calls.log ("METHOD PATH?QUERY") before anything
else, so a test can prove that a request did (or did not) reach the app.
Other markers (close() called, app started sleeping) are files in the same
directory. Data files for file responses live in $ZF_TEST_DATA; the
server's --tmp-dir is $ZF_TEST_TMP (to see whether a body was spooled).

Query parameters drive the behaviour; this is test code, never served to
anyone but the tests.
"""
import hashlib
import io
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

_calls_lock = threading.Lock()


def _markers():
    return os.environ.get("ZF_TEST_MARKERS", "/nonexistent")


def _data_path(name):
    name = os.path.basename(name)  # no path tricks, even in tests
    return os.path.join(os.environ.get("ZF_TEST_DATA", "/nonexistent"), name)


def _mark(name, text=""):
    if not name:
        return
    name = os.path.basename(name)
    with open(os.path.join(_markers(), name), "a") as f:
        f.write(text + "\n")


def _log_call(environ):
    line = "%s %s?%s\n" % (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                           environ.get("QUERY_STRING", ""))
    with _calls_lock:
        with open(os.path.join(_markers(), "calls.log"), "a") as f:
            f.write(line)


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""),
                                          keep_blank_values=True).items()}


def _text(start_response, status, body, extra=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


class ClosingIter:
    """An iterable with close() that leaves a marker file when closed."""

    def __init__(self, parts, marker, fail_at=None):
        self.parts = parts
        self.marker = marker
        self.fail_at = fail_at

    def __iter__(self):
        for i, p in enumerate(self.parts):
            if self.fail_at is not None and i == self.fail_at:
                raise RuntimeError("ClosingIter failing on purpose at part %d" % i)
            yield p

    def close(self):
        _mark(self.marker, "closed")


class FileStreamIterator(io.FileIO):
    """Like Zope's ZPublisher.Iterators.filestream_iterator: a FileIO that
    is its own iterator and exposes fileno(). Its close() leaves a marker."""

    def __init__(self, name, mode="rb", bufsize=-1, marker=None):
        super().__init__(name, mode)
        self.streamsize = 1 << 16
        self.marker = marker

    def __next__(self):
        data = self.read(self.streamsize)
        if not data:
            raise StopIteration
        return data

    def __iter__(self):
        return self

    def __len__(self):
        cur = self.tell()
        self.seek(0, os.SEEK_END)
        size = self.tell()
        self.seek(cur, os.SEEK_SET)
        return size

    def close(self):
        if not self.closed and self.marker:
            _mark(self.marker, "closed")
        super().close()


class MarkedFile(io.FileIO):
    """A plain file whose close() leaves a marker (for file_wrapper)."""

    marker = None

    def close(self):
        if not self.closed and self.marker:
            _mark(self.marker, "closed")
        super().close()


# ---------------------------------------------------------------- routes


def r_hello(environ, start_response):
    return _text(start_response, "200 OK", b"Hello, world!")


def r_env(environ, start_response):
    q = _q(environ)
    if "errors" in q:
        environ["wsgi.errors"].write("wsgi.errors says %s\n" % q["errors"])
        environ["wsgi.errors"].flush()
    out = {}
    for k, v in environ.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = "<%s>" % type(v).__name__
    out["_input_has"] = {m: hasattr(environ.get("wsgi.input"), m)
                         for m in ("read", "readline", "readlines", "__iter__")}
    out["_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    out["_errors_has"] = {m: hasattr(environ.get("wsgi.errors"), m)
                          for m in ("write", "writelines", "flush")}
    return _json(start_response, out)


def r_method(environ, start_response):
    body = environ["wsgi.input"].read()
    return _text(start_response, "200 OK", "%s %d" % (environ["REQUEST_METHOD"], len(body)))


def _spooled():
    """True when this process has a file open under the server's --tmp-dir
    (the request body spool, an unlinked temp file)."""
    tmp = os.environ.get("ZF_TEST_TMP")
    if not tmp:
        return None
    tmp = os.path.realpath(tmp)
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith(tmp + "/"):
            return True
    return False


_KEPT_INPUT = None


def r_kept_input(environ, start_response):
    """fileno() of the wsgi.input the last /body?mode=fileno kept, after its
    request ended."""
    try:
        _KEPT_INPUT.fileno()
        result = "no error"
    except Exception as e:  # noqa: BLE001 - reported to the test
        result = type(e).__name__
    return _text(start_response, "200 OK", result)


def r_body(environ, start_response):
    """Reads wsgi.input the way ?mode= says and reports length and sha256."""
    q = _q(environ)
    mode = q.get("mode", "read")
    inp = environ["wsgi.input"]
    spooled = _spooled()
    h = hashlib.sha256()
    n = 0
    pieces = 0
    if mode == "read":
        data = inp.read()
        h.update(data)
        n = len(data)
        pieces = 1
    elif mode == "readcl":
        data = inp.read(int(environ.get("CONTENT_LENGTH") or 0))
        h.update(data)
        n = len(data)
        pieces = 1
    elif mode == "chunks":
        size = int(q.get("size", "1000"))
        while True:
            data = inp.read(size)
            if not data:
                break
            assert len(data) <= size, "read(%d) returned %d bytes" % (size, len(data))
            h.update(data)
            n += len(data)
            pieces += 1
    elif mode == "readline":
        size = int(q["size"]) if "size" in q else None
        while True:
            line = inp.readline() if size is None else inp.readline(size)
            if not line:
                break
            if size is not None:
                assert len(line) <= size, "readline(%d) returned %d" % (size, len(line))
            else:
                assert line.endswith(b"\n") or b"\n" not in line
                assert line.count(b"\n") <= 1
            h.update(line)
            n += len(line)
            pieces += 1
    elif mode == "readlines":
        lines = inp.readlines()
        for line in lines:
            h.update(line)
            n += len(line)
        pieces = len(lines)
    elif mode == "iter":
        for line in inp:
            assert line.count(b"\n") <= 1
            h.update(line)
            n += len(line)
            pieces += 1
    elif mode == "mixed":
        # read(10), readline(), readlines(hint), then read() of the rest
        for part in (inp.read(10), inp.readline()):
            h.update(part)
            n += len(part)
        for line in inp.readlines(1000):
            h.update(line)
            n += len(line)
        rest = inp.read()
        h.update(rest)
        n += len(rest)
        pieces = 4
    elif mode == "fileno":
        # fileno() of a spooled body: read 1000 bytes through the stream,
        # all of the body through the descriptor (os.pread, explicit
        # offsets), then the rest through the stream: neither moves the other
        global _KEPT_INPUT
        _KEPT_INPUT = inp
        try:
            fd = inp.fileno()
        except Exception as e:  # noqa: BLE001 - reported to the test
            fileno = {"error": type(e).__name__, "oserror": isinstance(e, OSError),
                      "msg": str(e)}
            data = inp.read()
        else:
            head = inp.read(1000)
            hf = hashlib.sha256()
            off = 0
            while True:
                piece = os.pread(fd, 65536, off)
                if not piece:
                    break
                hf.update(piece)
                off += len(piece)
            fileno = {"fd_len": off, "fd_sha256": hf.hexdigest(), "tell": inp.tell()}
            data = head + inp.read()
        h.update(data)
        n = len(data)
        pieces = 1
    extra = inp.read()  # must be at EOF now
    if mode == "fileno":
        return _json(start_response, {"len": n, "sha256": h.hexdigest(), "spooled": spooled,
                                      "after_eof": len(extra), "fileno": fileno})
    return _json(start_response, {
        "len": n, "sha256": h.hexdigest(), "pieces": pieces,
        "content_length": environ.get("CONTENT_LENGTH"),
        "content_type": environ.get("CONTENT_TYPE"),
        "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
        "after_eof": len(extra), "spooled": spooled, "tag": q.get("tag"),
    })


def r_gen(environ, start_response):
    """A generator body. ?total= bytes in ?chunk= pieces, byte value of piece
    i is i % 251; ?cl=1 sends Content-Length; ?ar=1 sends Accept-Ranges;
    ?via=write sends every piece through write() instead; ?progress=NAME
    keeps the number of bytes produced so far in marker file NAME (at least
    every 64 KiB); ?list=1 returns all pieces made up front in a list;
    ?errors=NAME records in marker NAME the exception write() raised."""
    q = _q(environ)
    total = int(q.get("total", "100"))
    chunk = int(q.get("chunk", "262144"))
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("cl") == "1":
        headers.append(("Content-Length", str(total)))
    if q.get("ar") == "1":
        headers.append(("Accept-Ranges", "bytes"))
    write = start_response("200 OK", headers)
    marker = q.get("marker")
    progress = q.get("progress")

    def gen():
        sent = 0
        noted = 0
        i = 0
        while sent < total:
            n = min(chunk, total - sent)
            yield bytes([i % 251]) * n
            sent += n
            i += 1
            if progress and (sent - noted >= 65536 or sent == total):
                noted = sent
                with open(os.path.join(_markers(), os.path.basename(progress)), "w") as f:
                    f.write(str(sent))
            if q.get("pause"):
                time.sleep(float(q["pause"]))

    it = gen()
    if q.get("via") == "write":
        try:
            for piece in it:
                write(piece)
        except Exception as e:
            _mark(q.get("errors"), "%s %s" % (type(e).__name__, getattr(e, "errno", None)))
            raise
        return []
    if q.get("list") == "1":
        return list(it)
    if marker:
        return ClosingIter(it, marker)
    return it


def r_stream(environ, start_response):
    """Server-sent-event style: ?big= bytes written at once, ?bigs= times,
    then marker big-NAME; then ?events= small writes, each followed by a
    wait (bounded) for the test's marker ack-NAME-i. A wait that ran out
    leaves marker late-NAME."""
    q = _q(environ)
    name = q.get("name", "s")
    write = start_response("200 OK", [("Content-Type", "text/event-stream")])
    for i in range(int(q.get("bigs", "1"))):
        write(b"B" * int(q.get("big", "0")))
    _mark("big-" + name, "done")
    for i in range(int(q.get("events", "3"))):
        write(b"event %d\n" % i)
        ack = os.path.join(_markers(), "ack-%s-%d" % (name, i))
        deadline = time.monotonic() + float(q.get("wait", "15"))
        while not os.path.exists(ack):
            if time.monotonic() > deadline:
                _mark("late-" + name, str(i))
                break
            time.sleep(0.01)
    return []


def r_status(environ, start_response):
    """Answers ?code= (e.g. 304, 204) with ?cl= as the app's Content-Length."""
    q = _q(environ)
    headers = [("ETag", '"v1"')]
    if q.get("cl") is not None:
        headers.append(("Content-Length", q["cl"]))
    start_response("%s Status" % q.get("code", "200"), headers)
    return [b""]


class RaisingClose:
    """A complete body whose close() raises."""

    def __init__(self, parts):
        self.parts = parts

    def __iter__(self):
        return iter(self.parts)

    def close(self):
        raise RuntimeError("close() failing on purpose")


def r_close_raises(environ, start_response):
    q = _q(environ)
    headers = [("Content-Type", "text/plain")]
    if q.get("cl"):
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    return RaisingClose([b"part one;", b"part two;", b"end"])


def r_sleep(environ, start_response):
    """?s=SECONDS; marker `started` before sleeping, `finished` after."""
    q = _q(environ)
    _mark(q.get("started"), "started")
    time.sleep(float(q.get("s", "1")))
    _mark(q.get("finished"), "finished")
    return _text(start_response, "200 OK", "slept %s" % q.get("s", "1"))


def r_raise(environ, start_response):
    q = _q(environ)
    raise RuntimeError("app failure on purpose %s" % q.get("tag", ""))


def r_raise_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise ValueError("failed after start_response %s" % _q(environ).get("tag", ""))


def r_exc_info(environ, start_response):
    """start_response, then an error before any body: replace with a 500."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "yes")])
    try:
        raise KeyError("something missing")
    except KeyError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                     ("X-Replaced", "yes")], sys.exc_info())
    return [b"replaced by exc_info"]


def r_exc_info_late(environ, start_response):
    """An error after the body started: start_response(exc_info) must
    re-raise, and the client must see a truncated response, not a good end."""
    q = _q(environ)

    def gen():
        yield b"first part;"
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        yield b"never sent"

    headers = [("Content-Type", "text/plain")]
    if q.get("cl"):
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    return gen()


def r_fail_mid_body(environ, start_response):
    q = _q(environ)
    headers = [("Content-Type", "text/plain")]
    if q.get("cl"):
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    return ClosingIter([b"part one;", b"part two;", b"part three"], q.get("marker"),
                       fail_at=1)


def r_short_body(environ, start_response):
    """Declares a Content-Length larger than what it produces."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    return [b"only ten.."]


def r_start_twice(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"should not get here"]


def r_bad_str(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["a str, not bytes"]


def r_no_start(environ, start_response):
    return [b"never called start_response"]


def r_write(environ, start_response):
    q = _q(environ)
    headers = [("Content-Type", "text/plain")]
    if q.get("cl"):
        headers.append(("Content-Length", q["cl"]))
    write = start_response("200 OK", headers)
    write(b"written;")
    write(b"")  # empty writes are allowed
    write(b"written again;")
    return ClosingIter([b"returned;", b"", b"end"], q.get("marker"))


def r_close(environ, start_response):
    """A body with close(); ?marker= names the file close() writes."""
    q = _q(environ)
    parts = [b"a" * 10, b"b" * 10, b"c" * 10]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "30")])
    return ClosingIter(parts, q.get("marker"))


def r_file(environ, start_response):
    """A file response. ?name= file in ZF_TEST_DATA; ?how=wrapper (default),
    stream (filestream_iterator-like), bytesio (file_wrapper over a non-file);
    ?cl= Content-Length (default: from tell() to the end; 'none' for none);
    ?seek= offset to seek to first; ?ar=1 adds Accept-Ranges: bytes;
    ?etag=, ?lm= validators; ?marker= close() marker."""
    q = _q(environ)
    path = _data_path(q.get("name", "file.bin"))
    how = q.get("how", "wrapper")
    seek = int(q.get("seek", "0"))
    size = os.path.getsize(path)
    headers = [("Content-Type", "application/octet-stream")]
    cl = q.get("cl")
    if cl is None:
        headers.append(("Content-Length", str(size - seek)))
    elif cl != "none":
        headers.append(("Content-Length", cl))
    if q.get("ar") == "1":
        headers.append(("Accept-Ranges", "bytes"))
    if q.get("etag"):
        headers.append(("ETag", q["etag"]))
    if q.get("lm"):
        headers.append(("Last-Modified", q["lm"]))
    start_response("200 OK", headers)
    if how == "stream":
        f = FileStreamIterator(path, marker=q.get("marker"))
        f.seek(seek)
        return f
    if how == "bytesio":
        with open(path, "rb") as src:
            src.seek(seek)
            f = io.BytesIO(src.read())
        return environ["wsgi.file_wrapper"](f, 65536)
    f = MarkedFile(path, "rb")
    f.marker = q.get("marker")
    f.seek(seek)
    return environ["wsgi.file_wrapper"](f, 65536)


def r_echo(environ, start_response):
    """Echoes the request body back with a Content-Length."""
    body = environ["wsgi.input"].read()
    return _text(start_response, "200 OK", body)


def r_greet(environ, start_response):
    return _text(start_response, "200 OK", "app:" + _q(environ).get("who", "default"))


class SetUserOnClose:
    """A body whose close() sets environ["REMOTE_USER"] (the server must read
    it after close(), as Paste's TransLogger would see it)."""

    def __init__(self, environ, user):
        self.environ = environ
        self.user = user

    def __iter__(self):
        yield b"user set on close"

    def close(self):
        self.environ["REMOTE_USER"] = self.user


def r_user(environ, start_response):
    """Sets environ["REMOTE_USER"] as an authenticating app (Zope) does:
    ?user=NAME, during the call or (?when=close) in the body's close();
    ?how=file answers with a file (the file fast path)."""
    q = _q(environ)
    if q.get("when") == "close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return SetUserOnClose(environ, q.get("user", ""))
    environ["REMOTE_USER"] = q.get("user", "")
    if q.get("how") == "file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    return _text(start_response, "200 OK", "user set")


ROUTES = {
    "user": r_user,
    "hello": r_hello,
    "env": r_env,
    "method": r_method,
    "body": r_body,
    "kept_input": r_kept_input,
    "gen": r_gen,
    "stream": r_stream,
    "status": r_status,
    "close-raises": r_close_raises,
    "sleep": r_sleep,
    "raise": r_raise,
    "raise-after-start": r_raise_after_start,
    "exc-info": r_exc_info,
    "exc-info-late": r_exc_info_late,
    "fail-mid-body": r_fail_mid_body,
    "short-body": r_short_body,
    "start-twice": r_start_twice,
    "bad-str": r_bad_str,
    "no-start": r_no_start,
    "write": r_write,
    "close": r_close,
    "file": r_file,
    "echo": r_echo,
}


def application(environ, start_response):
    _log_call(environ)
    path = environ.get("PATH_INFO", "")
    first = path.lstrip("/").split("/", 1)[0]
    route = ROUTES.get(first)
    if route is None:
        return _text(start_response, "404 Not Found", "no route for %r" % path)
    return route(environ, start_response)


def other_application(environ, start_response):
    """A second callable, to tell which one a config selected."""
    _log_call(environ)
    return _text(start_response, "200 OK", "other application")
