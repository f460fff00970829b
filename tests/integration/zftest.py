"""Helpers for the black-box integration tests (imported by conftest and the tests).

Each test module starts the real `zfront` binary (env ZFRONT_BIN, default
<repo>/build/zfront) on a free loopback port with tests/integration/apps on
its --python-path, and talks to it with real clients: curl, Python's
http.client, raw sockets for malformed input.

The server factory:
  - gives each server its own temp root (markers/, data/, tmp/, the error
    log file) made with tempfile and removed at teardown;
  - starts the binary with `--http 127.0.0.1:0` and reads the bound port from
    the error log line "http: listening on 127.0.0.1:PORT" (or, with
    ZF_TEST_PICK_PORT=1, picks a free port itself and waits until it
    connects);
  - stops it by PID at teardown: SIGTERM, wait up to 10 s, then SIGKILL.

The fixtures that create servers (`server_factory`, `module_server_factory`)
are in conftest.py.
"""
import contextlib
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
APPS = os.path.join(HERE, "apps")
TIMEOUT = 10.0  # generous socket timeout: asserts behaviour, not speed
START_TIMEOUT = float(os.environ.get("ZF_TEST_START_TIMEOUT", "15"))
TEST_TIME_LIMIT = int(os.environ.get("ZF_TEST_TIME_LIMIT", "180"))

LISTEN_RE = re.compile(rb"http: listening on 127\.0\.0\.1:(\d+)")


def zfront_bin():
    path = os.environ.get("ZFRONT_BIN") or os.path.join(REPO, "build", "zfront")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("zfront binary not found at %s (set ZFRONT_BIN)" % path, pytrace=False)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=TIMEOUT, interval=0.05):
    """Polls pred() until it returns a true value (returned) or the bounded
    timeout passes (returns the last value, false)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# make test-tsan (ZF_TSAN=1): every server runs the ThreadSanitizer build
# (ZFRONT_BIN) with its reports written under its root; tsan_reports() collects
# the new ones of every server, and conftest fails the test they appeared in.
TSAN = os.environ.get("ZF_TSAN") == "1"
TSAN_SUPP = os.path.join(REPO, "tests", "tsan.supp")
SERVERS = []
_tsan_seen = {}
_tsan_pending = []


def _tsan_collect():
    for srv in list(SERVERS):
        with contextlib.suppress(OSError):
            for name in os.listdir(srv.root):
                if not name.startswith("tsan"):
                    continue
                path = os.path.join(srv.root, name)
                with open(path, "rb") as f:
                    f.seek(_tsan_seen.get(path, 0))
                    data = f.read()
                _tsan_seen[path] = _tsan_seen.get(path, 0) + len(data)
                text = data.decode("utf-8", "replace")
                for r in text.split("WARNING: ThreadSanitizer")[1:]:
                    _tsan_pending.append("%s (%s): WARNING: ThreadSanitizer%s"
                                         % (srv.name, name, r))


def tsan_reports():
    """New ThreadSanitizer reports of the servers of this run (a list of
    texts), each returned once."""
    _tsan_collect()
    out = list(_tsan_pending)
    del _tsan_pending[:]
    return out


class Server:
    """One running zfront process."""

    def __init__(self, args, *, name="zfront", env=None, app="testapp:application",
                 http="127.0.0.1:0", wait_listen=True, threads=None, extra_python_path=(),
                 error_log=None, python_path=True, tmp_dir=True, nofile=None, fsize=None):
        self.name = name
        self.killed = False
        self.root = tempfile.mkdtemp(prefix="zf-%s-" % name)
        self.markers = os.path.join(self.root, "markers")
        self.data = os.path.join(self.root, "data")
        self.tmp = os.path.join(self.root, "tmp")
        for d in (self.markers, self.data, self.tmp):
            os.mkdir(d)
        self.stderr_path = os.path.join(self.root, "stderr.log")
        self.stdout_path = os.path.join(self.root, "stdout.log")
        self.error_log = error_log  # a path when the test passes --error-log
        self.args = list(args)
        self.app = app
        self.http_addr = http
        self.wait_listen = wait_listen
        self.python_path = python_path
        self.tmp_dir = tmp_dir
        self.nofile = nofile  # RLIMIT_NOFILE for the server, like a service's ulimit -n
        self.fsize = fsize  # RLIMIT_FSIZE: files the server writes cannot grow past it
        self.threads = threads
        self.extra_python_path = list(extra_python_path)
        self.env = dict(os.environ)
        self.env.update({
            "ZF_TEST_MARKERS": self.markers,
            "ZF_TEST_DATA": self.data,
            "ZF_TEST_TMP": self.tmp,
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        # The pyenv python on PATH must not leak into the embedded Debian one.
        for k in ("PYTHONHOME", "PYTHONPATH"):
            self.env.pop(k, None)
        if TSAN and "TSAN_OPTIONS" not in (env or {}):
            # make test-tsan: reports go to files the suite checks after each
            # test (conftest.py: tsan_reports); the exit code stays the
            # server's own
            self.env["TSAN_OPTIONS"] = (
                "halt_on_error=0 exitcode=0 second_deadlock_stack=1 history_size=7 log_path=%s "
                "suppressions=%s" % (os.path.join(self.root, "tsan"), TSAN_SUPP))
        if env:
            self.env.update(env)
        SERVERS.append(self)
        self.proc = None
        self.port = None
        self.returncode = None

    # ---- life cycle

    def command(self):
        cmd = [zfront_bin()]
        if self.app:
            cmd += ["--app", self.app]
        if self.python_path:
            cmd += ["--python-path", APPS]
        for p in self.extra_python_path:
            cmd += ["--python-path", p]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        if self.tmp_dir:
            cmd += ["--tmp-dir", self.tmp]
        self._picked = 0
        if self.http_addr == "127.0.0.1:0" and os.environ.get("ZF_TEST_PICK_PORT") == "1":
            self._picked = free_port()
            cmd += ["--http", "127.0.0.1:%d" % self._picked]
        elif self.http_addr:
            cmd += ["--http", self.http_addr]
        return cmd + self.args

    def spawn(self):
        """Starts the process without waiting for it to listen."""
        self.cmd = self.command()
        preexec = None
        if self.nofile or self.fsize:
            n, fs = self.nofile, self.fsize

            def preexec():
                if n:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
                if fs:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=self.env, cwd=self.root,
                                         close_fds=True, preexec_fn=preexec)
        self.pid = self.proc.pid
        return self

    def start(self):
        self.spawn()
        if self.wait_listen:
            self.port = self._wait_listening()
        return self

    def _wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail_start("zfront exited with code %s before listening"
                                 % self.proc.returncode)
            if self._picked:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", self._picked), 0.5).close()
                    return self._picked
            else:
                m = LISTEN_RE.search(self.log_bytes())
                if m:
                    return int(m.group(1))
            time.sleep(0.05)
        self._fail_start("zfront did not report 'http: listening on 127.0.0.1:PORT' "
                         "within %.0f s" % START_TIMEOUT)

    def _fail_start(self, why):
        log = self.log()
        self.stop()
        pytest.fail("%s\ncommand: %s\n--- log ---\n%s" % (why, " ".join(self.cmd), log[-6000:]),
                    pytrace=False)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=TIMEOUT):
        """Waits for the process to exit; returns its code or None."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                self.killed = True
                warnings.warn("zfront pid %d (%s) ignored SIGTERM for %.0f s: killed"
                              % (self.pid, self.name, timeout))
        self.returncode = self.proc.returncode
        return self.returncode

    def cleanup(self):
        self.stop()
        if TSAN:
            _tsan_collect()  # the last ones, written at exit
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(ValueError):
            SERVERS.remove(self)

    # ---- logs and state

    def log_bytes(self):
        data = b""
        for p in (self.stderr_path, self.error_log):
            if p:
                with contextlib.suppress(OSError), open(p, "rb") as f:
                    data += f.read()
        return data

    def log(self):
        return self.log_bytes().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=TIMEOUT):
        """Waits for a regex (str) to appear in the error log; returns the
        match or None."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log()), timeout)

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def fds(self):
        out = {}
        for fd in os.listdir("/proc/%d/fd" % self.pid):
            with contextlib.suppress(OSError):
                out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
        return out

    def spool_fds(self):
        """Descriptors of the server on deleted files: its spool files (they
        are unlinked at creation, so the tmp dir never shows them)."""
        return [t for t in self.fds().values() if t.endswith(" (deleted)")]

    def spool_bytes(self):
        """Total size of the deleted files the server holds open."""
        total = 0
        seen = set()
        for fd, t in self.fds().items():
            if t.endswith(" (deleted)"):
                with contextlib.suppress(OSError):
                    st = os.stat("/proc/%d/fd/%d" % (self.pid, fd))
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_size
        return total

    def marker(self, name):
        return os.path.join(self.markers, name)

    def wait_marker(self, name, timeout=TIMEOUT):
        return wait_until(lambda: os.path.exists(self.marker(name)), timeout)

    def calls(self):
        try:
            with open(self.marker("calls.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    # ---- clients

    def connect(self, timeout=TIMEOUT, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", self.port))
        return s

    def http(self, timeout=TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=TIMEOUT):
        """One request on a fresh connection; returns (status, headers, body)."""
        c = self.http(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, r.headers, data
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def get_json(self, path, **kw):
        status, headers, body = self.request(kw.pop("method", "GET"), path, **kw)
        assert status == 200, (status, body[:500])
        return json.loads(body)

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def __repr__(self):
        return "<zfront pid=%s port=%s>" % (getattr(self, "pid", None), self.port)


# ------------------------------------------------------------ raw HTTP helpers


class _NoClose:
    """A file proxy whose close() does nothing, so several http.client
    responses can be read, one after another, from one buffered reader."""

    def __init__(self, f):
        self._f = f

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self._f, name)


class _SockShim:
    def __init__(self, f):
        self._f = f

    def makefile(self, *a, **k):
        return _NoClose(self._f)


def read_response(rfile, method="GET"):
    """Reads one complete response from a buffered reader (sock.makefile('rb'))
    with http.client; returns (HTTPResponse, body). Interim 1xx responses are
    skipped by http.client."""
    r = http.client.HTTPResponse(_SockShim(rfile), method=method)
    r.begin()
    body = r.read()
    return r, body


def read_head(rfile):
    """Reads a status line and header block as raw bytes; returns
    (status:int, {lower-name: value}, raw_bytes). Raises EOFError on a
    connection closed before a complete head."""
    raw = b""
    while True:
        line = rfile.readline(65537)
        if not line:
            raise EOFError("connection closed after %r" % raw)
        raw += line
        if line in (b"\r\n", b"\n"):
            break
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1])
    headers = {}
    for ln in lines[1:]:
        if not ln:
            continue
        k, _, v = ln.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode("latin-1")
    return status, headers, raw


def is_closed(sock, timeout=TIMEOUT):
    """True when the peer closes the connection (EOF or reset) within the
    timeout, after draining whatever it still sends."""
    sock.settimeout(timeout)
    try:
        while True:
            b = sock.recv(1 << 16)
            if not b:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def gen_expected(total, chunk=262144):
    """sha256 of the body that testapp's /gen produces."""
    h = hashlib.sha256()
    sent = 0
    i = 0
    while sent < total:
        n = min(chunk, total - sent)
        h.update(bytes([i % 251]) * n)
        sent += n
        i += 1
    return h.hexdigest()


def write_random_file(path, size):
    """Writes a pseudo-random file of `size` bytes; returns its sha256 hex."""
    h = hashlib.sha256()
    base = bytearray(os.urandom(1 << 20))
    with open(path, "wb") as f:
        off = 0
        i = 0
        while off < size:
            n = min(len(base), size - off)
            base[0:8] = i.to_bytes(8, "big")
            chunk = bytes(base[:n])
            f.write(chunk)
            h.update(chunk)
            off += n
            i += 1
    return h.hexdigest()


def curl(*args, timeout=60, check=True):
    """Runs curl; returns CompletedProcess (stdout bytes, stderr text)."""
    p = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout))] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 5)
    if check:
        assert p.returncode == 0, "curl %s failed (%d): %s" % (args, p.returncode,
                                                               p.stderr.decode())
    p.stderr = p.stderr.decode("utf-8", "replace")
    return p

