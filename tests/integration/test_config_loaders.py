"""Configuration and app loaders: a TOML config file, command-line flags
overriding it, bad config refused at start-up; `--paste` with a
PasteDeploy ini shaped like Plone's; `--zope-conf` without Zope installed
(clear error, non-zero exit); `--demo`."""
import json
import os
import subprocess
import re

from zftest import APPS, free_port, read_response

# The TOML keys under test ("section", "key"), as zfront --config-reference
# lists them.
K_APP = ("app", "module")
K_THREADS = ("server", "threads")
K_PYPATH = ("app", "python_path")
K_ACCESS = ("log", "access")
K_LISTEN = ("http", "listen")
K_MAXBODY = ("http", "max_body_size")


def toml_text(values):
    """values: {(section, key): python value} -> TOML text."""
    sections = {}
    for (sec, key), v in values.items():
        sections.setdefault(sec, []).append((key, v))
    out = []
    for sec, items in sections.items():
        out.append("[%s]" % sec)
        for key, v in items:
            out.append("%s = %s" % (key, json.dumps(v)))  # JSON scalars/arrays are valid TOML
        out.append("")
    return "\n".join(out)


def config_server(server_factory, values, *args, name="toml", **kw):
    srv = server_factory(start=False, app=None, http=None, python_path=False, name=name, **kw)
    values = dict(values)
    path = os.path.join(srv.root, "zfront.toml")
    with open(path, "w") as f:
        f.write(toml_text(values))
    srv.config_path = path
    srv.args = ["--config", path] + list(args)
    return srv


def base_values(srv_root):
    return {
        K_APP: "testapp:other_application",
        K_THREADS: 2,
        K_PYPATH: [APPS],
        K_ACCESS: os.path.join(srv_root, "access.log"),
        K_LISTEN: ["127.0.0.1:0"],
        K_MAXBODY: "1k",
    }


def test_toml_config(server_factory):
    srv = config_server(server_factory, {})
    with open(srv.config_path, "w") as f:
        f.write(toml_text(base_values(srv.root)))
    srv.start()
    status, _, body = srv.get("/hello")
    assert body == b"other application"
    status, _, body = srv.request("POST", "/hello", body=b"x" * 2048)
    assert status == 413, "max_body_size from the TOML file not applied"
    with open(os.path.join(srv.root, "access.log")) as f:
        assert "/hello" in f.read()


def test_cli_overrides_toml(server_factory):
    fixed = free_port()
    srv = config_server(server_factory, {}, "--app", "testapp:application",
                        "--max-body-size", "1m", "--http", "127.0.0.1:0")
    values = base_values(srv.root)
    values[K_LISTEN] = ["127.0.0.1:%d" % fixed]
    with open(srv.config_path, "w") as f:
        f.write(toml_text(values))
    srv.start()
    assert srv.port != fixed, "--http did not replace the TOML listen list"
    assert srv.get("/hello")[2] == b"Hello, world!"
    status, _, body = srv.request("POST", "/body", body=b"x" * 2048)
    assert status == 200 and json.loads(body)["len"] == 2048


def expect_start_failure(srv, timeout=20):
    srv.wait_listen = False
    srv.start()
    code = srv.wait(timeout)
    assert code is not None, "zfront kept running with a bad configuration"
    assert code != 0
    return srv.log()


def test_toml_syntax_error_refused(server_factory):
    srv = config_server(server_factory, {})
    with open(srv.config_path, "w") as f:
        f.write("[server\napp = \n")
    log = expect_start_failure(srv)
    assert "zfront.toml" in log, log


def test_unknown_toml_key_refused(server_factory):
    srv = config_server(server_factory, {})
    values = base_values(srv.root)
    values[("http", "no_such_setting_zz")] = 5
    with open(srv.config_path, "w") as f:
        f.write(toml_text(values))
    log = expect_start_failure(srv)
    assert "no_such_setting_zz" in log, log


def test_bad_value_refused(server_factory):
    srv = server_factory("--max-body-size", "lots", start=False, name="badvalue")
    log = expect_start_failure(srv)
    assert "lots" in log or "max-body-size" in log, log


def test_more_flags(server_factory):
    """--app without ':callable' means `application`; --pid-file; --server-name."""
    srv = server_factory(start=False, app="testapp", name="flags")
    pid_file = os.path.join(srv.root, "zfront.pid")
    srv.args += ["--pid-file", pid_file, "--server-name", "www.example.test"]
    srv.start()
    env = srv.get_json("/env")
    assert env["SERVER_NAME"] == "www.example.test"
    with open(pid_file) as f:
        assert int(f.read().strip()) == srv.pid


# ------------------------------------------------------------------ PasteDeploy

PASTE_INI = """\
# shaped like the wsgi.ini that Plone's cookiecutter generates
[server:main]
use = egg:waitress#main
listen = 0.0.0.0:8080
threads = 4

[app:site]
use = call:pasteapp:make_app
greeting = hello from paste
datafile = %(here)s/data.txt

[filter:tagger]
use = call:pasteapp:make_filter
header = X-Paste-Filter

[pipeline:main]
pipeline =
    tagger
    site

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-7.7s [%(name)s:%(lineno)s][%(threadName)s] %(message)s
"""


def test_paste_deploy_ini(server_factory):
    srv = server_factory(start=False, app=None, name="paste")
    ini = os.path.join(srv.root, "wsgi.ini")
    with open(ini, "w") as f:
        f.write(PASTE_INI)
    srv.args += ["--paste", ini]
    srv.start()
    c = srv.http()
    try:
        c.request("GET", "/anything")
        r = c.getresponse()
        info = json.loads(r.read())
    finally:
        c.close()
    assert r.status == 200
    assert info["greeting"] == "hello from paste"
    assert info["datafile"] == os.path.join(srv.root, "data.txt")
    assert info["filtered"] is True
    assert r.getheader("X-Paste-Filter") == "yes"
    assert info["channel"] == "http"


# ------------------------------------------------------------------------ Zope


def test_zope_conf_without_zope(server_factory):
    srv = server_factory(start=False, app=None, name="zc")
    conf = os.path.join(srv.root, "site.conf")
    with open(conf, "w") as f:
        f.write("%define INSTANCE " + srv.root + "\ninstancehome $INSTANCE\n")
    srv.args += ["--zope-conf", conf]
    log = expect_start_failure(srv)
    # the message must name Zope itself (the path we gave does not contain it)
    assert "zope" not in conf.lower()
    assert re.search(r"(?i)zope", log.replace(conf, "")), log


# ------------------------------------------------------------------------ demo


def test_demo(server_factory):
    srv = server_factory(start=False, app=None, python_path=False, name="demo")
    state = os.path.join(srv.root, "state")
    # every module the demo turns on gets a free port instead of its default
    srv.args += ["--demo", "--state-dir", state, "--https", "127.0.0.1:0", "--ssh",
                 "127.0.0.1:0"]
    srv.start()
    status, headers, body = srv.get("/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b"<html" in body.lower()
    status, headers, body = srv.get("/hello")
    assert status == 200 and body == b"Hello, world!"

    s = srv.connect()
    f = s.makefile("rb")
    try:
        s.sendall(b"HEAD /files/big.bin HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /files/big.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=0-99\r\n\r\n"
                  b"GET /files/big.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=100-199\r\n\r\n")
        r, _ = read_response(f, method="HEAD")
        assert r.status == 200
        assert r.getheader("Accept-Ranges") == "bytes"
        size = int(r.getheader("Content-Length"))
        assert size > 1 << 20
        r, first = read_response(f)
        assert r.status == 206 and len(first) == 100
        assert r.getheader("Content-Range") == "bytes 0-99/%d" % size
        r, second = read_response(f)
        assert r.status == 206 and len(second) == 100
    finally:
        f.close()
        s.close()

    # the SSH console is on with a key made for the demo, and the log says
    # how to use it; the demo namespace has the content root
    m = srv.wait_log(r"ssh: demo console: ssh -i (\S+) -p (\d+) admin@127\.0\.0\.1")
    assert m, srv.log()[-2000:]
    key, port = m.group(1), int(m.group(2))
    assert os.stat(key).st_mode & 0o077 == 0
    out = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", key, "-p", str(port), "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "admin@127.0.0.1",
         "print(sorted(site.keys()))"],
        capture_output=True, timeout=60, input=b"",
        env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"})
    assert out.returncode == 0, out.stderr
    assert b"docs" in out.stdout
    c = srv.http()
    try:
        c.request("GET", "/files/big.bin")
        r = c.getresponse()
        head = r.read(200)
        assert head == first + second
        rest = 200
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            rest += len(b)
        assert rest == size
    finally:
        c.close()


def test_port_in_use_exits_non_zero(server_factory):
    """A listener that cannot bind stops the start with a clear error and a
    non-zero exit status (a service manager must see the failure)."""
    first = server_factory(name="first")
    srv = server_factory("--https", "127.0.0.1:%d" % first.port, start=False, name="second")
    log = expect_start_failure(srv)
    assert "cannot listen on 127.0.0.1:%d" % first.port in log, log
