"""The admin listener's live status page in a real browser (issue 13):
Debian's headless chromium, driven by playwright-core (tests/browser/
status.mjs, the runner of test_ws_browser.py), opens /status, the test makes
requests to the application, and the page must show the new request count
without being reloaded or polling: the only request it makes after loading
is its event stream. The screenshot is kept in build/test-artifacts/."""
import json
import os

import pytest

from test_ws_browser import BROWSER_DIR, Browser, browser_missing, keep_artifact
from test_metrics import app_get, start

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))

SCRIPT = os.path.join(BROWSER_DIR, "status.mjs")
MORE = 5


def test_status_page_updates_itself(server_factory):
    srv = start(server_factory, "--set", "admin.status_interval=300ms", threads=2)
    url = "http://127.0.0.1:%d/status" % srv.admin_port
    shot = os.path.join(srv.root, "status-page.png")
    b = Browser(url, str(MORE), shot, os.path.join(srv.root, "chromium-profile"), script=SCRIPT)
    try:
        ready = b.wait_for("ready")
        assert ready, "the page did not connect:\n" + b.output() + "\n" + srv.log()
        for _ in range(MORE):
            assert app_get(srv, "/hello") == 200
        rc = b.finish()
    finally:
        b.stop()
    out = b.output()
    assert os.path.exists(shot), "no screenshot:\n" + out
    kept = keep_artifact(shot)
    print("screenshot: %s (kept as %s)" % (shot, kept))
    assert rc == 0, "the page did not show the requests:\n" + out + "\n" + srv.log()
    final = [json.loads(l) for l in b.lines if l.startswith("{") and '"updates"' in l][-1]
    assert final["state"] == "open", out
    assert final["requests"] == ready["requests"] + MORE, out
    assert final["updates"] >= 2, out
    assert final["workers"] == 2, out  # one row per worker
    # the same document all along (no reload), and no polling: besides the
    # page itself the browser fetched only its event stream (and maybe the
    # favicon)
    assert final["marker"] == "same document" and final["navigations"] == 1, out
    fetched = [u for u in final["fetched"] if not u.endswith("/favicon.ico")]
    assert fetched == [url, url.rsplit("/", 1)[0] + "/status/events"], out
