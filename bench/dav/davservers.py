"""The WebDAV servers of bench/dav/run: zfront --demo and its anchors.

Each one serves a content folder of its own (`root`) in a temp work dir, on a
free 127.0.0.1 port, with its own config file, pid file and logs there, no
access log, and is stopped by PID (bench/harness/procs). As root, Apache's
children run as www-data (Apache refuses to serve as root), so the work dir is
handed to www-data; every other server runs as the current user.
"""

import http.client
import os
import pwd
import shutil
import subprocess
import time

from harness import procs
from harness.servers import HOST, PY, free_port


class DavServer:
    name = ""
    label = ""
    debian = ""  # packages providing it, for the skip line
    big = True  # measured with the 1 GiB PUT/GET
    upload_tmp = None  # zfront: where the store copies an upload (its PUT timed in 2 phases)

    def __init__(self, ctx):
        self.ctx = ctx
        self.port = None
        self.workdir = self.root = self.log = None
        self.proc = None

    def missing(self):
        return None

    def prepare(self):
        """Writes the config; sets self.root (the served folder). Returns argv."""
        raise NotImplementedError

    def env(self):
        return {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "PYTHONHOME", "PYENV_VERSION")}

    def version(self):
        return ""

    def url(self, path="/"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def chown(self, path):
        """Gives a file made by the harness in root to the server's user."""

    def start(self):
        self.port = free_port()
        self.workdir = os.path.join(self.ctx.tmp, self.name)
        os.makedirs(self.workdir)
        self.log = os.path.join(self.workdir, "server.log")
        argv = self.prepare()
        self.proc = procs.spawn(argv, env=self.env(), cwd=self.workdir, log=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s at start-up:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
                conn.request("OPTIONS", "/")
                status = conn.getresponse().status
                conn.close()
                if status in (200, 204):
                    return self
                raise RuntimeError("%s answered OPTIONS / with %d" % (self.name, status))
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("%s not ready after 60 s:\n%s" % (self.name, self.log_tail()))

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def log_tail(self, lines=20):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""


class Zfront(DavServer):
    name, label = "zfront", "zfront --demo (Python store)"

    def missing(self):
        if not os.access(self.ctx.zfront, os.X_OK):
            return "zfront binary not found at %s (ninja -C build)" % self.ctx.zfront
        return None

    def version(self):
        r = subprocess.run([self.ctx.zfront, "--version"], capture_output=True, text=True)
        return r.stdout.strip()

    def env(self):
        env = super().env()
        env["ZFRONT_DEMO_BIG_SIZE"] = "1m"  # the demo's own big file: not measured here
        return env

    def prepare(self):
        state = os.path.join(self.workdir, "state")
        spool = os.path.join(self.workdir, "spool")
        os.makedirs(spool)
        self.root = os.path.join(state, "content")
        # the demo store copies a PUT's body (spooled by zfront first) to dav-tmp/put-*
        self.upload_tmp = os.path.join(state, "dav-tmp")
        # Defaults otherwise (4 worker threads); no access log, like the others here.
        return [self.ctx.zfront, "--demo", "--state-dir", state, "--tmp-dir", spool,
                "--http", "%s:%d" % (HOST, self.port), "--https", "%s:0" % HOST,
                "--ssh", "%s:0" % HOST, "--access-log", ""] + self.ctx.zfront_args


APACHE_CONF = """\
ServerRoot "{w}"
ServerName 127.0.0.1
Listen {host}:{port}
PidFile {w}/apache2.pid
ErrorLog {w}/error.log
LogLevel warn
DefaultRuntimeDir {w}/run
Mutex file:{w}/run default
{user}
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule mime_module {mods}/mod_mime.so
LoadModule dav_module {mods}/mod_dav.so
LoadModule dav_fs_module {mods}/mod_dav_fs.so
TypesConfig /etc/mime.types
EnableSendfile On
LimitRequestBody 0
DavLockDB {w}/lock/DavLock
DocumentRoot "{root}"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}">
    Dav On
    Options None
    AllowOverride None
    Require all granted
</Directory>
"""


class Apache(DavServer):
    """Debian's Apache 2.4, mpm_event with its defaults, mod_dav + mod_dav_fs."""

    name, label, debian = "apache", "Apache mod_dav_fs", "apache2"
    mods = "/usr/lib/apache2/modules"

    def missing(self):
        for f in ("/usr/sbin/apache2", self.mods + "/mod_dav_fs.so"):
            if not os.path.exists(f):
                return "%s not found (Debian package apache2)" % f
        return None

    def version(self):
        r = subprocess.run(["/usr/sbin/apache2", "-v"], capture_output=True, text=True)
        return r.stdout.splitlines()[0].split(":", 1)[-1].strip() if r.stdout else ""

    def _user(self):
        return pwd.getpwnam("www-data") if os.geteuid() == 0 else None

    def chown(self, path):
        user = self._user()
        if user:
            os.chown(path, user.pw_uid, user.pw_gid)

    def prepare(self):
        self.root = os.path.join(self.workdir, "root")
        for d in (self.root, os.path.join(self.workdir, "run"),
                  os.path.join(self.workdir, "lock")):
            os.makedirs(d)
            self.chown(d)
        user = self._user()
        conf = os.path.join(self.workdir, "apache2.conf")
        with open(conf, "w") as f:
            f.write(APACHE_CONF.format(
                w=self.workdir, host=HOST, port=self.port, mods=self.mods, root=self.root,
                user="User www-data\nGroup www-data" if user else ""))
        return ["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"]

    def env(self):
        env = super().env()
        env["LANG"] = "C"
        return env


NGINX_CONF = """\
load_module {ext};
worker_processes 1;
daemon off;
{user}
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    sendfile on;
    client_max_body_size 0;
    dav_ext_lock_zone zone=davlock:10m;
    server {{
        listen {host}:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
            dav_ext_lock zone=davlock;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


class Nginx(DavServer):
    """Debian's nginx: its built-in dav module (PUT DELETE MKCOL COPY MOVE) and
    libnginx-mod-http-dav-ext (PROPFIND OPTIONS LOCK UNLOCK); one worker."""

    name, label, debian = "nginx", "nginx dav + dav-ext", "nginx libnginx-mod-http-dav-ext"
    ext = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"

    def missing(self):
        if not os.path.exists("/usr/sbin/nginx"):
            return "/usr/sbin/nginx not found (Debian package nginx)"
        if not os.path.exists(self.ext):
            return "%s not found (Debian package libnginx-mod-http-dav-ext)" % self.ext
        return None

    def version(self):
        r = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True)
        return r.stderr.strip().split(":", 1)[-1].strip()

    def prepare(self):
        self.root = os.path.join(self.workdir, "root")
        os.makedirs(self.root)
        conf = os.path.join(self.workdir, "nginx.conf")
        with open(conf, "w") as f:
            # as root, the worker runs as root too: the files are the harness's
            f.write(NGINX_CONF.format(w=self.workdir, host=HOST, port=self.port,
                                      root=self.root, ext=self.ext,
                                      user="user root;" if os.geteuid() == 0 else ""))
        return ["/usr/sbin/nginx", "-p", self.workdir, "-c", conf, "-e",
                os.path.join(self.workdir, "error.log")]


class PyWebDAV(DavServer):
    """PyWebDAV 0.9 (Debian python3-webdav, `davserver3`) as shipped: its own
    threaded http.server, no auth, locks on (Debian 12 has no wsgidav)."""

    name, label, debian = "pywebdav", "PyWebDAV (Python)", "python3-webdav"
    big = False  # a Python peer for PROPFIND; the transfer targets are against Apache

    def missing(self):
        if not shutil.which("davserver3"):
            return "davserver3 not found (Debian package python3-webdav)"
        return None

    def version(self):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "python3-webdav"],
                           capture_output=True, text=True)
        return "PyWebDAV " + r.stdout.strip()

    def prepare(self):
        self.root = os.path.join(self.workdir, "root")
        os.makedirs(self.root)
        return [PY, shutil.which("davserver3"), "-D", self.root, "-H", HOST, "-P",
                str(self.port), "-n"]


ALL = [Zfront, Apache, Nginx, PyWebDAV]
NAMES = [cls.name for cls in ALL]
