"""Debian's litmus (the WebDAV compliance suite) against `zfront --demo`
with a fresh state directory: every test of basic, copymove, props, locks
and http passes, with no warning. The whole litmus output is printed (it
shows in the test log when something fails)."""
import re
import shutil
import subprocess

import pytest
from davtest import start_demo

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


@pytest.mark.skipif(shutil.which("litmus") is None, reason="litmus is not installed "
                    "(scripts/install-deps.sh installs it)")
def test_litmus_all_suites_pass(server_factory):
    srv = start_demo(server_factory, name="litmus")
    # litmus writes debug.log into its working directory: the server's temp root
    p = subprocess.run(["litmus", srv.url("/")], cwd=srv.root, env={
        "PATH": "/usr/bin:/bin", "TESTS": " ".join(SUITES), "HOME": srv.root},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=150)
    out = p.stdout.decode("utf-8", "replace")
    print(out)
    results = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
               for m in SUMMARY.finditer(out)}
    assert set(results) == set(SUITES), out
    for suite, (run, passed, failed) in results.items():
        assert failed == 0 and passed == run and run > 0, (suite, out)
    assert "WARNING" not in out and "warning" not in out, out
    assert p.returncode == 0, out
