"""The servers under test: how each one is started with N worker threads.

Every app server runs bench/app.py with the same environment (ZF_BENCH_FILE),
on 127.0.0.1, one process, N application threads, access logging off, each
peer's defaults otherwise. nginx serves the same file statically: the
machine's reference for what a server can send over loopback.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

from . import measure, procs

HOST = "127.0.0.1"
PY = "/usr/bin/python3"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A server definition. Subclasses give argv(); `missing()` says why it can't run."""

    name = ""
    label = ""
    stop_signal = signal.SIGTERM
    debian = ""  # package(s) that provide it, for the skip line

    def __init__(self, ctx):
        self.ctx = ctx

    def missing(self):
        return None

    def argv(self, port, threads, workdir):
        raise NotImplementedError

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYENV_VERSION")}
        env["ZF_BENCH_FILE"] = self.ctx.blob
        env["PYTHONPATH"] = self.ctx.bench_dir
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env


def _need(path, pkg):
    return None if os.path.exists(path) else "%s not found (Debian package %s)" % (path, pkg)


def _need_module(module, pkg):
    r = subprocess.run([PY, "-c", "import " + module], capture_output=True)
    return None if r.returncode == 0 else "%s cannot import %s (Debian package %s)" % (
        PY, module, pkg)


class Zfront(Server):
    name, label = "zfront", "zfront"

    def missing(self):
        path = self.ctx.zfront
        if not path or not os.access(path, os.X_OK):
            return ("zfront binary not found at %s (build it: meson setup build && ninja -C "
                    "build, or pass --zfront PATH)" % (path or "build/zfront"))
        return None

    def argv(self, port, threads, workdir):
        argv = [self.ctx.zfront, "--app", "app:application", "--http", "%s:%d" % (HOST, port),
                "--threads", str(threads), "--python-path", self.ctx.bench_dir,
                "--access-log", ""]  # off (the default today): no server here logs requests
        return argv + self.ctx.zfront_args


class Waitress(Server):
    name, label, debian = "waitress", "waitress", "python3-waitress"

    def missing(self):
        return _need_module("waitress", self.debian)

    def argv(self, port, threads, workdir):
        return [PY, "-m", "waitress", "--listen=%s:%d" % (HOST, port),
                "--threads=%d" % threads, "app:application"]


class Gunicorn(Server):
    name, label, debian = "gunicorn", "gunicorn gthread", "gunicorn"

    def missing(self):
        return _need("/usr/bin/gunicorn", self.debian)

    def argv(self, port, threads, workdir):
        # --timeout only so a slow 1-thread run is not killed as a hung worker.
        return ["/usr/bin/gunicorn", "-k", "gthread", "--workers", "1",
                "--threads", str(threads), "--bind", "%s:%d" % (HOST, port),
                "--timeout", "600", "--log-level", "warning", "app:application"]


class Uwsgi(Server):
    name, label, debian = "uwsgi", "uWSGI", "uwsgi-core uwsgi-plugin-python3"
    stop_signal = signal.SIGINT  # SIGTERM means "reload" to a uWSGI master
    offload = 0

    def missing(self):
        return (_need("/usr/bin/uwsgi-core", self.debian)
                or _need("/usr/lib/uwsgi/plugins/python3_plugin.so", "uwsgi-plugin-python3"))

    def argv(self, port, threads, workdir):
        argv = ["/usr/bin/uwsgi-core", "--plugin", "python3", "--http11-socket",
                "%s:%d" % (HOST, port), "--wsgi-file", os.path.join(self.ctx.bench_dir, "app.py"),
                "--callable", "application", "--master", "--processes", "1",
                "--threads", str(threads), "--enable-threads", "--need-app",
                "--disable-logging", "--die-on-term", "--listen", "1024"]
        if self.offload:
            argv += ["--offload-threads", str(self.offload)]
        return argv


class UwsgiOffload(Uwsgi):
    name, label = "uwsgi-offload", "uWSGI offload"
    offload = 2


class Twisted(Server):
    name, label, debian = "twisted", "Twisted WSGI", "python3-twisted"

    def missing(self):
        return _need_module("twisted.web.wsgi", self.debian)

    def argv(self, port, threads, workdir):
        return [PY, os.path.join(self.ctx.bench_dir, "peers", "twisted_wsgi.py"), HOST,
                str(port), str(threads)]


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen {host}:{port} backlog=1024;
        location = /hello {{ default_type text/plain; return 200 "Hello, world!"; }}
        location = /blob {{ alias {blob}; default_type application/octet-stream; }}
        location = /gen {{ alias {blob}; default_type application/octet-stream; }}
        location = /upload {{
            client_max_body_size 0;
            default_type text/plain;
            return 200 "$content_length";
        }}
    }}
}}
"""


class Nginx(Server):
    """Static reference: /gen is the same static file, /upload is read and discarded."""

    name, label, debian = "nginx", "nginx (static)", "nginx"

    def missing(self):
        return _need("/usr/sbin/nginx", "nginx-light or nginx")

    def argv(self, port, threads, workdir):
        conf = os.path.join(workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(w=workdir, host=HOST, port=port, blob=self.ctx.blob))
        return ["/usr/sbin/nginx", "-p", workdir, "-c", conf, "-e",
                os.path.join(workdir, "error.log")]


ALL = [Zfront, Nginx, Waitress, Gunicorn, Uwsgi, UwsgiOffload, Twisted]
NAMES = [cls.name for cls in ALL]


class Running:
    """A started server: its process, port and log. Use as a context manager."""

    def __init__(self, server, threads):
        self.server, self.threads = server, threads
        self.port = free_port()
        self.workdir = os.path.join(server.ctx.tmp, "%s-%d" % (server.name, threads))
        os.makedirs(self.workdir, exist_ok=True)
        self.log = os.path.join(self.workdir, "server.log")
        self.proc = None

    def __enter__(self):
        argv = self.server.argv(self.port, self.threads, self.workdir)
        self.proc = procs.spawn(argv, env=self.server.env(), cwd=self.server.ctx.bench_dir,
                                log=self.log)
        try:
            self._wait_ready(30.0)
        except Exception:
            self.__exit__()
            raise
        return self

    def _wait_ready(self, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s at start-up:\n%s"
                                   % (self.server.name, self.proc.returncode, self.log_tail()))
            try:
                status, body, _ = measure.http_get(HOST, self.port, "/hello", 2.0)
                if status == 200 and body == b"Hello, world!":
                    return
                raise RuntimeError("%s answered /hello with %d %r"
                                   % (self.server.name, status, body[:60]))
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("%s not ready after %.0f s:\n%s"
                           % (self.server.name, limit, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=15):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __exit__(self, *exc):
        if self.proc is not None:
            procs.stop(self.proc, self.server.stop_signal)
            self.proc = None


def which_missing_tools():
    return [t for t in ("wrk",) if shutil.which(t) is None]
