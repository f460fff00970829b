"""systemd integration without systemd: a unix datagram socket of the test
plays the service manager's NOTIFY_SOCKET (READY, STATUS, RELOADING,
STOPPING, WATCHDOG), and the test hands zfront listening sockets the way
systemd's socket activation does (fd 3 and up, LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES)."""
import contextlib
import ctypes
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from zftest import REPO, TIMEOUT, Server, wait_until

# Re-executes itself after putting the descriptors listed in ZF_TEST_INHERIT
# at 3, 4, ... and setting LISTEN_PID to its own pid (kept by exec): only the
# child knows its pid, as only systemd does for the service it starts.
WRAPPER = r"""
import fcntl, os, sys
src = [int(x) for x in os.environ.pop("ZF_TEST_INHERIT").split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in src]
for fd in src:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
for fd in high:
    os.close(fd)
os.environ.setdefault("LISTEN_PID", str(os.getpid()))
if os.environ["LISTEN_PID"] == "none":
    del os.environ["LISTEN_PID"]
os.execv(sys.argv[1], sys.argv[1:])
"""

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


class SdServer(Server):
    """A Server started the way systemd starts a service: `inherit` sockets
    become fds 3.. with LISTEN_FDS (and LISTEN_FDNAMES from `names`); with
    `mdwe` the process runs under Memory-Deny-Write-Execute (prctl), the
    kernel's form of MemoryDenyWriteExecute=yes."""

    def __init__(self, args, *, inherit=(), names=None, listen_pid=None, mdwe=False, **kw):
        super().__init__(args, **kw)
        self.inherit = list(inherit)
        self.mdwe = mdwe
        if self.inherit:
            self.env["ZF_TEST_INHERIT"] = ",".join(str(s.fileno()) for s in self.inherit)
            self.env["LISTEN_FDS"] = str(len(self.inherit))
            if names:
                self.env["LISTEN_FDNAMES"] = ":".join(names)
            if listen_pid:
                self.env["LISTEN_PID"] = listen_pid

    def spawn(self):
        self.cmd = self.command()
        cmd = self.cmd
        if self.inherit:
            cmd = ["/usr/bin/python3", "-c", WRAPPER] + cmd
        preexec = None
        if self.mdwe:
            def preexec():
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
                    os._exit(97)
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=self.env, cwd=self.root, close_fds=True,
                                         pass_fds=[s.fileno() for s in self.inherit],
                                         preexec_fn=preexec)
        self.pid = self.proc.pid
        return self


class Notify:
    """The service manager's end of NOTIFY_SOCKET: a thread reads every
    datagram zfront sends at once, as systemd does, parsed into a dict of
    its KEY=VALUE lines. With read=False nobody reads: the socket's queue
    fills and a sender that waits for room would block."""

    def __init__(self, read=True):
        self.dir = tempfile.mkdtemp(prefix="zf-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []  # every message received
        self.queue = queue.Queue()  # those no wait() took yet
        self.reader = None
        if read:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            msg = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.msgs.append(msg)
            self.queue.put(msg)

    def wait(self, pred, timeout=TIMEOUT):
        """The first message not yet taken for which pred(msg) is true, or
        None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = self.queue.get(timeout=left)
            except queue.Empty:
                return None
            if pred(msg):
                return msg

    def wait_key(self, key, timeout=TIMEOUT):
        return self.wait(lambda m: key in m, timeout)

    def drain(self):
        """Takes every message received so far; returns them."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.queue.get_nowait())
        return out

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.reader:
            self.reader.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


@pytest.fixture
def sd_factory():
    servers = []

    def make(*args, start=True, **kw):
        kw.setdefault("app", "systemdapp:application")
        s = SdServer(list(args), **kw)
        servers.append(s)
        return s.start() if start else s

    yield make
    reports = []
    for s in servers:
        s.stop()
        log = s.log()
        s.cleanup()
        # under `make test-asan`: no leak, overflow or undefined behaviour
        if "Sanitizer" in log or "runtime error:" in log:
            reports.append(log[-4000:])
    assert not reports, "\n".join(reports)


@pytest.fixture(scope="module")
def libsystemd():
    """The binary under test links libsystemd (meson option `systemd`, auto;
    install-deps.sh installs libsystemd-dev): a build without it neither
    notifies nor takes passed sockets, on purpose, and fails these tests."""
    exe = os.environ.get("ZFRONT_BIN") or os.path.join(REPO, "build", "zfront")
    out = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    assert "libsystemd.so" in out, "zfront built without libsystemd (meson -Dsystemd=disabled)"



def listening_socket(host="127.0.0.1", family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(16)
    return s


def socket_inode(pid, fd):
    """The inode of a process's socket descriptor, or None."""
    with contextlib.suppress(OSError):
        m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink("/proc/%d/fd/%d" % (pid, fd)))
        return int(m.group(1)) if m else None
    return None


def listen_port(srv, timeout=TIMEOUT):
    m = srv.wait_log(r"http: listening on 127\.0\.0\.1:(\d+)", timeout)
    assert m, srv.log()[-3000:]
    return int(m.group(1))


# ------------------------------------------------------------------ sd_notify


@pytest.mark.usefixtures("libsystemd")
def test_ready_after_listening_status_and_stopping(sd_factory, notify):
    srv = sd_factory("--set", "systemd.status_interval=100ms", wait_listen=False,
                     env={"NOTIFY_SOCKET": notify.path})
    loading = notify.wait(lambda m: m.get("STATUS") == "loading the application")
    assert loading, notify.msgs
    ready = notify.wait_key("READY")
    assert ready and ready["READY"] == "1", (notify.msgs, srv.log()[-2000:])
    # READY=1 comes after the listener is up and the app loaded: the port
    # answers at once, with no wait or retry
    srv.port = listen_port(srv, timeout=0)
    assert srv.get("/")[0] == 200
    assert re.fullmatch(r"serving http 127\.0\.0\.1:%d: \d+ connection\(s\), \d+/4 worker\(s\) "
                        r"busy, \d+ queued" % srv.port, ready["STATUS"]), ready
    # the STATUS= line is refreshed while it serves (systemd.status_interval)
    assert notify.wait(lambda m: m.get("STATUS", "").startswith("serving http"))
    assert notify.wait(lambda m: m.get("STATUS", "").startswith("serving http"))
    srv.signal(signal.SIGTERM)
    stopping = notify.wait_key("STOPPING")
    assert stopping and stopping["STOPPING"] == "1", notify.msgs
    assert re.fullmatch(r"stopping: \d+ connection\(s\) open, \d+ request\(s\) running, \d+ "
                        r"queued", stopping["STATUS"]), stopping
    assert srv.wait() == 0


@pytest.mark.usefixtures("libsystemd")
def test_failed_start_says_why_in_status(sd_factory, notify):
    srv = sd_factory(app="systemdapp:no_such_app", wait_listen=False,
                     env={"NOTIFY_SOCKET": notify.path})
    assert srv.wait() not in (0, None)
    failed = notify.wait(lambda m: m.get("STATUS", "").startswith("start-up failed"), 5)
    assert failed == {"STATUS": "start-up failed: cannot load the application (see the error "
                                "log)"}, notify.msgs
    assert not any("READY" in m for m in notify.msgs)


@pytest.mark.usefixtures("libsystemd")
def test_sighup_reloading_then_ready(sd_factory, notify):
    srv = sd_factory(env={"NOTIFY_SOCKET": notify.path})
    assert notify.wait_key("READY")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    srv.signal(signal.SIGHUP)
    reloading = notify.wait_key("RELOADING")
    assert reloading and reloading["RELOADING"] == "1", notify.msgs
    # Type=notify-reload (systemd 253+) needs the reload's start time
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after, reloading
    again = notify.wait_key("READY")
    assert again and again["READY"] == "1"
    assert again["STATUS"].startswith("serving http 127.0.0.1:%d" % srv.port)
    assert srv.get("/")[0] == 200


@pytest.mark.usefixtures("libsystemd")
def test_watchdog_pings_at_half_the_period(sd_factory, notify):
    srv = sd_factory(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    assert srv.wait_log(r"systemd: watchdog every 100 ms \(WatchdogSec 200 ms\)")
    for _ in range(5):
        assert notify.wait(lambda m: m.get("WATCHDOG") == "1"), srv.log()[-2000:]
    # the watchdog variables are the server's, not the application's
    names = json.loads(srv.get("/os-environ")[2])
    assert "WATCHDOG_USEC" not in names and "NOTIFY_SOCKET" in names


def test_watchdog_for_another_pid_is_ignored(sd_factory, notify):
    srv = sd_factory(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000",
                          "WATCHDOG_PID": "1"})
    assert notify.wait_key("READY")
    assert "watchdog every" not in srv.log()


def stuck_server(sd_factory, notify, *extra):
    srv = sd_factory("--threads", "1", "--set", "server.stuck_after=200ms", *extra,
                     env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    assert notify.wait_key("READY")
    results = []
    t = threading.Thread(target=lambda: results.append(srv.get("/sleep?s=4")))
    t.start()
    assert srv.wait_log(r"stuck|busy for"), srv.log()[-2000:]
    return srv, t, results


@pytest.mark.usefixtures("libsystemd")
def test_watchdog_held_while_every_worker_is_stuck(sd_factory, notify):
    srv, t, results = stuck_server(sd_factory, notify, "--set", "systemd.watchdog_stuck=true")
    try:
        assert srv.wait_log(r"systemd: every worker \(1\) is stuck: WATCHDOG=1 pings stop")
        notify.drain()  # the pings sent before that line
        assert notify.wait(lambda m: "WATCHDOG" in m, timeout=1.0) is None
        assert t.is_alive()  # the worker was stuck all that time
    finally:
        t.join()
    assert results[0][0] == 200
    assert srv.wait_log(r"systemd: a worker is free again: WATCHDOG=1 pings resume")
    assert notify.wait(lambda m: m.get("WATCHDOG") == "1")


@pytest.mark.usefixtures("libsystemd")
def test_watchdog_keeps_pinging_with_stuck_workers_by_default(sd_factory, notify):
    srv, t, results = stuck_server(sd_factory, notify, "--set", "systemd.status_interval=100ms")
    try:
        notify.drain()
        for _ in range(3):
            assert notify.wait(lambda m: m.get("WATCHDOG") == "1")
        # the STATUS= line tells the admin
        assert notify.wait(lambda m: m.get("STATUS", "").endswith(
            ": 1 connection(s), 1/1 worker(s) busy, 0 queued, 1 stuck")), notify.msgs[-5:]
        assert t.is_alive()
    finally:
        t.join()
    assert results and results[0][0] == 200, srv.log()[-3000:]
    assert "pings stop" not in srv.log()


def test_without_notify_socket_nothing_changes(sd_factory):
    srv = sd_factory(start=False)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID"):
        srv.env.pop(k, None)
    srv.start()
    assert srv.get("/")[0] == 200
    srv.signal(signal.SIGHUP)
    assert srv.wait_log(r"SIGHUP: re-opening logs")
    assert srv.get("/")[0] == 200
    assert srv.stop() == 0
    assert "systemd:" not in srv.log()


@pytest.mark.usefixtures("libsystemd")
def test_a_manager_that_does_not_read_never_stalls_the_loop(sd_factory):
    """sd_notify() waits while the manager's socket queue is full: zfront
    sends from a thread of its own, so the loop goes on serving."""
    deaf = Notify(read=False)
    try:
        srv = sd_factory("--set", "systemd.status_interval=10ms",
                         env={"NOTIFY_SOCKET": deaf.path, "WATCHDOG_USEC": "20000"})
        # far more messages than the socket queues (net.unix.max_dgram_qlen)
        for _ in range(20):
            assert srv.get("/")[0] == 200
            time.sleep(0.05)
        assert srv.stop() == 0
        assert srv.wait_log(r"systemd: the service manager does not read %s" % deaf.path)
    finally:
        deaf.close()


@pytest.mark.usefixtures("libsystemd")
def test_unreachable_notify_socket_is_logged_once(sd_factory):
    srv = sd_factory("--set", "systemd.status_interval=50ms",
                     env={"NOTIFY_SOCKET": "/nonexistent/zf-notify"})
    assert srv.get("/")[0] == 200
    assert srv.wait_log(r"systemd: cannot notify the service manager through "
                        r"/nonexistent/zf-notify: No such file or directory")
    time.sleep(0.3)  # several STATUS= refreshes fail meanwhile
    assert srv.get("/")[0] == 200
    assert srv.log().count("cannot notify") == 1


# --------------------------------------------------------- socket activation


@pytest.mark.usefixtures("libsystemd")
def test_socket_activation_serves_the_inherited_socket(sd_factory, notify):
    sock = listening_socket()
    port = sock.getsockname()[1]
    inode = os.fstat(sock.fileno()).st_ino
    try:
        srv = sd_factory(http="127.0.0.1:%d" % port, inherit=[sock], names=["web"],
                         wait_listen=False, env={"NOTIFY_SOCKET": notify.path})
        assert notify.wait_key("READY"), srv.log()[-3000:]
        assert srv.wait_log(r"http: listening on 127\.0\.0\.1:%d \(socket from systemd: fd 3, "
                            r"web\)" % port, timeout=0), srv.log()[-3000:]
        srv.port = port
        # zfront serves on the very socket the test bound (its own bind
        # would have failed: the port is taken by this listening socket)
        assert socket_inode(srv.pid, 3) == inode
        assert srv.get("/")[0] == 200
    finally:
        sock.close()
    # the test's copy is gone: zfront's is the only one left, and serves
    assert srv.get("/")[0] == 200
    names = json.loads(srv.get("/os-environ")[2])
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(names), names
    assert srv.stop() == 0


@pytest.mark.usefixtures("libsystemd")
def test_socket_activation_ipv6(sd_factory):
    sock = listening_socket("::1", socket.AF_INET6)
    port = sock.getsockname()[1]
    inode = os.fstat(sock.fileno()).st_ino
    try:
        srv = sd_factory(http="[::1]:%d" % port, inherit=[sock], wait_listen=False)
        assert srv.wait_log(r"http: listening on \[::1\]:%d \(socket from systemd: fd 3, "
                            r"unknown\)" % port), srv.log()[-3000:]
        assert socket_inode(srv.pid, 3) == inode
    finally:
        sock.close()
    c = http.client.HTTPConnection("::1", port, timeout=TIMEOUT)
    try:
        c.request("GET", "/")
        assert c.getresponse().status == 200
    finally:
        c.close()


@pytest.mark.usefixtures("libsystemd")
def test_inherited_socket_matching_no_listener_is_closed(sd_factory):
    used, stray = listening_socket(), listening_socket()
    port, stray_port = used.getsockname()[1], stray.getsockname()[1]
    stray_inode = os.fstat(stray.fileno()).st_ino
    try:
        srv = sd_factory(http="127.0.0.1:%d" % port, inherit=[used, stray],
                         names=["web", "other"], wait_listen=False)
        srv.port = listen_port(srv)
        assert srv.wait_log(r"systemd: passed fd 4 \(other, 127\.0\.0\.1:%d\) matches no "
                            r"configured listener: closed" % stray_port), srv.log()[-3000:]
        assert srv.get("/")[0] == 200
        assert socket_inode(srv.pid, 4) != stray_inode
        assert stray_inode not in {socket_inode(srv.pid, fd) for fd in srv.fds()}
    finally:
        used.close()
        stray.close()


def test_listen_fds_for_another_process_are_ignored(sd_factory):
    sock = listening_socket()
    port = sock.getsockname()[1]
    try:
        srv = sd_factory(http="127.0.0.1:%d" % port, inherit=[sock], listen_pid="1",
                         start=False)
        srv.spawn()
        # not ours (LISTEN_PID is another pid): zfront binds itself, and
        # cannot, since the test holds the port
        assert srv.wait() not in (0, None), srv.log()[-3000:]
        assert re.search(r"cannot listen on 127\.0\.0\.1:%d" % port, srv.log())
        assert "socket from systemd" not in srv.log()
    finally:
        sock.close()


@pytest.mark.usefixtures("libsystemd")
def test_socket_activation_for_ssh(sd_factory, tmp_path):
    assert "--ssh" in subprocess.run([os.environ.get("ZFRONT_BIN") or
                                      os.path.join(REPO, "build", "zfront"), "--help"],
                                     capture_output=True, text=True).stdout, "built without SSH"
    from sshtest import keygen
    keys = str(tmp_path / "authorized_keys")
    with open(keys, "w") as f:
        f.write(keygen(str(tmp_path / "client")) + "\n")
    web, ssh = listening_socket(), listening_socket()
    port, ssh_port = web.getsockname()[1], ssh.getsockname()[1]
    try:
        srv = sd_factory("--ssh", "127.0.0.1:%d" % ssh_port, "--ssh-authorized-keys", keys,
                         http="127.0.0.1:%d" % port,
                         inherit=[web, ssh], names=["web", "ssh"])
        assert srv.wait_log(r"ssh: listening on 127\.0\.0\.1:%d \(socket from systemd: fd 4, "
                            r"ssh\)" % ssh_port), srv.log()[-3000:]
    finally:
        web.close()
        ssh.close()
    with socket.create_connection(("127.0.0.1", ssh_port), TIMEOUT) as c:
        c.settimeout(TIMEOUT)
        assert c.recv(64).startswith(b"SSH-2.0-")


# ------------------------------------------------------------------ hardening


def test_memory_deny_write_execute(sd_factory):
    """MemoryDenyWriteExecute=yes in the example unit: CPython and a ctypes
    callback (libffi's static trampolines) work without a writable and
    executable mapping, which the kernel then refuses."""
    srv = sd_factory(mdwe=True)
    out = json.loads(srv.get("/ctypes")[2])
    assert out == {"sorted": [1, 2, 3, 4, 5], "wx_allowed": False}, out


UNITS = os.path.join(REPO, "contrib", "systemd")


def test_unit_files_verify(tmp_path):
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing (scripts/install-deps.sh installs systemd)"
    # the template as an instance, its binary path pointed at the build
    zfront = os.environ.get("ZFRONT_BIN") or os.path.join(REPO, "build", "zfront")
    for src, dst in (("zfront@.service", "zfront@demo.service"),
                     ("zfront@.socket", "zfront@demo.socket")):
        text = open(os.path.join(UNITS, src)).read().replace("/usr/bin/zfront", zfront)
        (tmp_path / dst).write_text(text)
    r = subprocess.run([exe, "verify", "--man=no", str(tmp_path / "zfront@demo.service"),
                        str(tmp_path / "zfront@demo.socket")],
                       capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "zfront" in line and line.strip()]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


@pytest.mark.tsan
@pytest.mark.usefixtures("libsystemd")
def test_notifier_hand_off_has_no_data_race(sd_factory, notify, tmp_path):
    """The loop queues notifications while the notifier thread sends them
    (and a newer STATUS= replaces a queued one): every access to the queue
    is ordered by its lock. Selected only by `make test-tsan`."""
    tsan = os.environ.get("ZFRONT_TSAN_BIN")
    assert tsan, "ZFRONT_TSAN_BIN must name a ThreadSanitizer build of zfront"
    logs = tmp_path / "tsan"
    srv = sd_factory("--set", "systemd.status_interval=10ms", start=False,
                     env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "20000",
                          "TSAN_OPTIONS": "halt_on_error=0 exitcode=0 log_path=%s" % logs})
    srv.command = lambda orig=srv.command: [tsan] + orig()[1:]
    srv.start()
    for _ in range(10):
        assert srv.get("/")[0] == 200
    srv.signal(signal.SIGHUP)
    assert notify.wait_key("RELOADING")
    assert notify.wait_key("READY")
    assert srv.stop() == 0
    assert notify.wait_key("STOPPING")
    reports = "".join(p.read_text(errors="replace") for p in tmp_path.glob("tsan*"))
    ours = [r for r in reports.split("WARNING: ThreadSanitizer")[1:] if "core/systemd.c" in r]
    assert ours == [], ours[0][:3000]
