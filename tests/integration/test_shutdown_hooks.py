"""Python shutdown hooks: at a graceful stop, after the workers finished
their requests and before the interpreter is finalized, zfront runs the
callables registered with zfront.on_shutdown (last first), then the atexit
handlers; a failing hook is logged and the others still run. The app is
apps/shutdownapp.py, loaded with --app."""
import signal

from zftest import TIMEOUT


def test_hooks_run_after_the_workers_finished(server_factory):
    srv = server_factory("--threads", "2", "--shutdown-timeout", "20s",
                         app="shutdownapp:application", name="hooks")
    s = srv.connect(timeout=TIMEOUT)
    f = s.makefile("rb")
    try:
        s.sendall(b"GET /slow?s=1.5 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert srv.wait_marker("slow-started")
        srv.signal(signal.SIGTERM)
        assert f.read().endswith(b"ok")
    finally:
        f.close()
        s.close()
    assert srv.wait(20) == 0, srv.log()[-3000:]
    with open(srv.marker("shutdown.log")) as fh:
        ran = fh.read().splitlines()
    # each hook once, in order, every one after the request in flight ended
    assert ran == ["on_shutdown-last slow-done", "on_shutdown-first slow-done",
                   "atexit slow-done"], ran
    log = srv.log()
    assert "shutdown hook <function failing_hook" in log and "fails on purpose" in log, log


def test_on_shutdown_refuses_a_non_callable(server_factory):
    srv = server_factory(start=False, app="shutdownapp:application", name="hooks-bad",
                         env={"ZF_TEST_BAD_HOOK": "1"})
    srv.wait_listen = False
    srv.start()
    assert srv.wait(20) not in (None, 0)
    assert "zfront.on_shutdown() needs a callable, not int" in srv.log()
