"""pytest fixtures for the black-box integration tests; the Server class and
the client helpers live in zftest.py."""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zftest import TEST_TIME_LIMIT, TSAN, Server, tsan_reports  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked `tsan` run only with a ThreadSanitizer build
    (ZFRONT_TSAN_BIN, `make test-tsan`); elsewhere they are deselected, not
    skipped: a default run has nothing it silently does not test."""
    if os.environ.get("ZFRONT_TSAN_BIN"):
        return
    keep = [i for i in items if i.get_closest_marker("tsan") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


# -------------------------------------------------------------------- fixtures


class _Factory:
    def __init__(self):
        self.servers = []

    def __call__(self, *args, start=True, **kw):
        s = Server(list(args), **kw)
        self.servers.append(s)
        return s.start() if start else s

    def cleanup(self):
        for s in self.servers:
            s.cleanup()


@pytest.fixture
def server_factory():
    """server_factory('--threads', '1', ...) -> started Server; stopped and
    removed after the test. Keyword arguments go to Server()."""
    f = _Factory()
    yield f
    f.cleanup()


@pytest.fixture(scope="module")
def module_server_factory():
    f = _Factory()
    yield f
    f.cleanup()


@pytest.fixture(autouse=True)
def _tsan_check(request):
    """make test-tsan: a test fails when a server reported a data race (or
    another ThreadSanitizer finding) while it ran, or at its exit."""
    if not TSAN:
        yield
        return
    tsan_reports()  # earlier ones belong to earlier tests
    yield
    found = tsan_reports()
    if found:
        pytest.fail("ThreadSanitizer: %d report(s); the first:\n%s"
                    % (len(found), found[0][:4000]), pytrace=False)


@pytest.fixture(autouse=True)
def _time_limit():
    """A bound on every test (no pytest-timeout in Debian's base set): the
    alarm raises in the test's main thread."""
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %d s" % TEST_TIME_LIMIT)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIME_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


