"""SIGUSR1 dumps what each worker runs and every Python thread's stack to
the error log, and the server goes on serving."""
import signal
import threading

from zftest import wait_until


def test_sigusr1_dumps_workers_and_python_stacks(server_factory):
    srv = server_factory("--threads", "2", app="opsapp")
    results = []
    t = threading.Thread(target=lambda: results.append(srv.get("/slow?s=3&who=me")))
    t.start()
    try:
        assert srv.wait_marker("started.log")
        srv.signal(signal.SIGUSR1)
        assert srv.wait_log(r"SIGUSR1: end of the dump")
        log = srv.log()
        assert "SIGUSR1: state dump: 2 worker(s), 1 busy" in log
        assert srv.wait_log(r"SIGUSR1: worker \d: busy for \d+\.\d s on GET /slow\?s=3&who=me "
                            r"\(channel http, #\d+\)")
        assert srv.wait_log(r"SIGUSR1: worker \d: idle")
        # the busy worker's Python stack, named by its index, shows where it waits
        stacks = log[log.index("SIGUSR1: Python stacks"):]
        assert "--- worker " in stacks
        assert "opsapp.py" in stacks and "time.sleep(float(q.get(\"s\", \"0\")))" in stacks
        # the server is alive and serving while and after it dumps
        assert srv.alive()
        assert srv.get("/status")[0] == 200
    finally:
        t.join()
    assert results[0][0] == 200


def test_sigusr1_when_idle(server_factory):
    srv = server_factory("--threads", "1", app="opsapp")
    srv.signal(signal.SIGUSR1)
    assert srv.wait_log(r"SIGUSR1: end of the dump")
    assert "SIGUSR1: worker 0: idle" in srv.log()
    assert srv.wait_log(r"SIGUSR1: Python stacks:\n.*no thread runs Python code")
    # a second dump works too (the first one released its guard)
    srv.signal(signal.SIGUSR1)
    assert wait_until(lambda: srv.log().count("SIGUSR1: end of the dump") == 2)
    assert srv.alive()
