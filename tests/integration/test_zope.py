"""Zope fidelity, against apps/fakezope: a stand-in for Zope 5.8 that
reproduces, under Zope's own names, what zfront relies on (see
apps/fakezope/README.md; real Zope is not installable here).

- `--zope-conf` builds the pipeline Zope's own WSGI set-up builds: the
  publisher behind ZPublisher.httpexceptions, so NotFound is a 404 and a
  duplicate id a 400 (not a 500 with a traceback);
- the user Zope authenticated (environ["REMOTE_USER"]) is in the access log;
- a graceful stop closes Zope's databases (Zope2.opened), as Zope's runwsgi
  does, with --zope-conf and with --paste over Zope's generated zope.ini.
"""
import base64
import os
import signal

import pytest

from zftest import APPS, wait_until

FAKEZOPE = os.path.join(APPS, "fakezope")
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}

# The zope.ini Zope 5.8's mkwsgiinstance generates (etc/zope.ini), with the
# log files under the instance; [server:main] is ignored by zfront.
ZOPE_INI = """\
[app:zope]
use = egg:Zope#main
zope_conf = %(here)s/zope.conf

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = 8080

[filter:translogger]
use = egg:Paste#translogger
setup_console_handler = False

[pipeline:main]
pipeline =
    egg:Zope#httpexceptions
    translogger
    zope

[loggers]
keys = root, wsgi

[handlers]
keys = console, accesslog

[formatters]
keys = generic, message

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s:%(lineno)s][%(threadName)s] %(message)s
datefmt = %Y-%m-%d %H:%M:%S

[formatter_message]
format = %(message)s

[logger_root]
level = INFO
handlers = console

[logger_wsgi]
level = WARN
handlers = accesslog
qualname = wsgi
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[handler_accesslog]
class = FileHandler
args = (r'%(here)s/Z4.log','a')
level = INFO
formatter = message
"""


def zope_server(factory, how="zope-conf", name="zope"):
    srv = factory(start=False, app=None, extra_python_path=[FAKEZOPE], name=name)
    conf = os.path.join(srv.root, "zope.conf")
    with open(conf, "w") as f:
        f.write("%define INSTANCE " + srv.root + "\ninstancehome $INSTANCE\n")
    srv.access_path = os.path.join(srv.root, "access.log")
    srv.args += ["--access-log", srv.access_path]
    if how == "zope-conf":
        srv.args += ["--zope-conf", conf]
    else:
        ini = os.path.join(srv.root, "zope.ini")
        with open(ini, "w") as f:
            f.write(ZOPE_INI)
        srv.args += ["--paste", ini]
    return srv.start()


@pytest.fixture(scope="module")
def zope(module_server_factory):
    return zope_server(module_server_factory)


def test_root(zope):
    status, _, body = zope.get("/")
    assert status == 200 and body == b"Zope root\n"


def test_not_found_is_404(zope):
    status, _, body = zope.get("/nonexistent")
    assert status == 404, body
    assert b"Not Found" in body
    assert "NotFound" not in zope.log()


def test_duplicate_id_is_400(zope):
    status, _, _ = zope.get("/manage_addFolder?id=dup", headers=ADMIN)
    assert status == 201
    assert zope.get("/dup")[0] == 200
    status, _, body = zope.get("/manage_addFolder?id=dup", headers=ADMIN)
    assert status == 400, body
    assert b"already in use" in body


def test_other_errors_stay_500_with_traceback_in_log(zope):
    """The filter handles HTTP exceptions only: anything else is still the
    server's 500, with the traceback in the error log."""
    status, _, body = zope.get("/boom")
    assert status == 500
    assert b"fake Zope failed" not in body
    assert wait_until(lambda: "ValueError: fake Zope failed" in zope.log())


def test_access_log_has_the_zope_user(zope):
    assert zope.get("/whoami?as=admin", headers=ADMIN)[2] == b"admin\n"
    assert zope.get("/whoami?as=anon")[2] == b"Anonymous User\n"

    def lines():
        with open(zope.access_path) as f:
            found = [ln for ln in f if "/whoami?as=" in ln]
        return found if len(found) == 2 else None

    found = wait_until(lines)
    assert found, open(zope.access_path).read()
    by_query = {("admin" if "as=admin" in ln else "anon"): ln for ln in found}
    assert by_query["admin"].startswith("127.0.0.1 - admin [")
    assert by_query["anon"].startswith("127.0.0.1 - - [")


@pytest.mark.parametrize("how", ["zope-conf", "paste"])
def test_graceful_stop_closes_zope_databases(server_factory, how):
    srv = zope_server(server_factory, how, name="zope-stop-" + how)
    assert srv.get("/nonexistent")[0] == 404  # the filter is there with --paste too
    db_log = srv.marker("zope-db.log")
    with open(db_log) as f:
        assert f.read().splitlines() == ["opened zope.conf"]
    srv.signal(signal.SIGTERM)
    assert srv.wait(20) == 0, srv.log()[-3000:]
    with open(db_log) as f:
        assert f.read().splitlines() == ["opened zope.conf", "closed zope.conf"]
