"""The demo's live notifications in a real browser (issue 11): Debian's
headless chromium, driven by playwright-core (tests/browser/, installed by
scripts/install-deps.sh with `npm ci`), opens `zfront --demo`'s /live page,
waits until it is connected and subscribed, the test changes the content
over HTTP (a WebDAV PUT), and the page must list the notification the demo
publishes on demo/content. Over ws:// (http listener) and wss:// (the https
listener's self-signed certificate). The screenshot is kept in
build/test-artifacts/ (next to ZFRONT_BIN)."""
import json
import os
import select
import shutil
import subprocess
import time

import pytest

from davtest import start_demo
from zftest import REPO, zfront_bin

BROWSER_DIR = os.path.join(REPO, "tests", "browser")
SCRIPT = os.path.join(BROWSER_DIR, "live.mjs")
CHROMIUM = os.environ.get("ZF_CHROMIUM", "/usr/bin/chromium")
# generous: chromium's start on a busy machine, not a speed bound
STEP = 30.0


def browser_missing():
    if not shutil.which("node"):
        return "node is not installed (scripts/install-deps.sh)"
    if not os.access(CHROMIUM, os.X_OK):
        return "%s is not installed (scripts/install-deps.sh)" % CHROMIUM
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "tests/browser/node_modules is missing (scripts/install-deps.sh runs npm ci)"
    return None


pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


class Browser:
    """live.mjs (or another script of tests/browser/ with the same arguments)
    as a child process; its stdout is one JSON object a line."""

    def __init__(self, url, expected, shot, profile, script=SCRIPT):
        env = dict(os.environ, ZF_BROWSER_WAIT_MS=str(int(STEP * 1000)), ZF_CHROMIUM=CHROMIUM)
        self.proc = subprocess.Popen(["node", script, url, expected, shot, profile],
                                     cwd=BROWSER_DIR, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self.lines = []
        self.buf = b""

    def next(self, deadline):
        """The next JSON line, or None at EOF or the deadline."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                return None
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        self.lines.append(line.decode("utf-8", "replace"))
        try:
            return json.loads(line)
        except ValueError:
            return {"raw": self.lines[-1]}

    def wait_for(self, key, timeout=STEP):
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(deadline)
            if msg is None:
                return None
            if key in msg:
                return msg

    def finish(self, timeout=STEP + 15):
        """Reads the rest of the output; returns the exit status."""
        deadline = time.monotonic() + timeout
        while self.next(deadline) is not None:
            pass
        try:
            return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def stop(self):
        """Ends the script if still running: SIGTERM first (playwright then
        closes the browser it launched), SIGKILL after 10 s."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()  # our own child, by its handle
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def output(self):
        return "\n".join(self.lines)


def keep_artifact(path):
    """Copies the screenshot to build/test-artifacts/ so it outlives the
    server's temp root; returns the copy's path."""
    outdir = os.path.join(os.path.dirname(zfront_bin()), "test-artifacts")
    os.makedirs(outdir, exist_ok=True)
    dest = os.path.join(outdir, os.path.basename(path))
    shutil.copyfile(path, dest)
    return dest


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_live_page_shows_content_change(server_factory, scheme):
    srv = start_demo(server_factory, name="wsbrowser-" + scheme)
    if scheme == "https":
        m = srv.wait_log(r"https: listening on 127\.0\.0\.1:(\d+)")
        assert m, srv.log()
        url = "https://127.0.0.1:%d/live" % int(m.group(1))
    else:
        url = srv.url("/live")
    name = "browser-note-%s.html" % scheme
    expected = "content changed: PUT /" + name
    shot = os.path.join(srv.root, "ws-browser-%s.png" % scheme)
    b = Browser(url, expected, shot, os.path.join(srv.root, "chromium-profile"))
    try:
        ready = b.wait_for("ready")
        assert ready, "the page did not connect:\n" + b.output() + "\n" + srv.log()
        # the edit, over HTTP: a WebDAV PUT of a page into the demo's content
        status, _, body = srv.request("PUT", "/" + name, body=b"<p>written by the test</p>\n",
                                      headers={"Content-Type": "text/html"})
        assert status == 201, body
        rc = b.finish()
    finally:
        b.stop()
    out = b.output()
    assert os.path.exists(shot), "no screenshot:\n" + out
    kept = keep_artifact(shot)
    print("screenshot: %s (kept as %s)" % (shot, kept))
    assert rc == 0, "the notification did not appear in the page:\n" + out + "\n" + srv.log()
    # the page's own list, as the script read it from the DOM
    final = [json.loads(l) for l in b.lines if l.startswith("{") and '"events"' in l]
    assert final and final[-1]["state"] == "open", out
    assert any(expected in e for e in final[-1]["events"]), out
    if scheme == "https":
        # Chromium speaks h2 to the https listener: its wss:// handshake is
        # an RFC 8441 extended CONNECT, which the demo must accept
        assert '"CONNECT /ws HTTP/2" 200' in srv.log(), srv.log()
