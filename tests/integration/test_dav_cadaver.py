"""A scripted cadaver session (commands on stdin) against `zfront --demo`:
mkcol, put, get, propset/propget, lock, unlock, move, delete; the store's
files are checked on disk and over HTTP after it. The demo store has no
authentication, so cadaver asks for no credentials."""
import os
import shutil
import subprocess

import pytest
from davtest import start_demo


@pytest.mark.skipif(shutil.which("cadaver") is None, reason="cadaver is not installed "
                    "(scripts/install-deps.sh installs it)")
def test_cadaver_session(server_factory, tmp_path):
    srv = start_demo(server_factory, name="cadaver")
    local = tmp_path / "local.txt"
    local.write_bytes(b"written by cadaver\n")
    script = "\n".join([
        "mkcol docs2",
        "cd docs2",
        "put local.txt page.txt",
        "get page.txt fetched.txt",
        "propset page.txt colour blue",
        "propget page.txt colour",
        "lock page.txt",
        "showlocks",
        "unlock page.txt",
        "move page.txt moved.txt",
        "put local.txt gone.txt",
        "delete gone.txt",
        "ls",
        "quit",
    ]) + "\n"
    p = subprocess.run(["cadaver", srv.url("/")], input=script.encode(), cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "dumb"},
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    print(out)
    for step in ("Creating `docs2': succeeded.",
                 "Uploading local.txt to `/docs2/page.txt':",
                 "Downloading `/docs2/page.txt' to fetched.txt:",
                 "Setting property on `page.txt': succeeded.",
                 "Value of colour is: blue",
                 "Locking `page.txt': succeeded.",
                 "Unlocking `page.txt': succeeded.",
                 "Moving `/docs2/page.txt' to `/docs2/moved.txt':  succeeded.",
                 "Deleting `gone.txt': succeeded."):
        assert step in out, (step, out)
    assert "failed" not in out.lower(), out
    assert "Scope: exclusive" in out, out
    assert (tmp_path / "fetched.txt").read_bytes() == b"written by cadaver\n"
    content = os.path.join(srv.content, "docs2")
    assert sorted(os.listdir(content)) == ["moved.txt"]
    status, _, body = srv.get("/docs2/moved.txt")
    assert status == 200 and body == b"written by cadaver\n"
    # the page of the folder lists what cadaver left there
    assert b"moved.txt" in srv.get("/docs2/")[2]
