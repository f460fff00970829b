"""The documentation stays true to the binary: every configuration key and
flag the binary knows is in docs/configuration.md, and --help lists the
flags the README shows."""
import os
import re
import subprocess

from zftest import zfront_bin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_configuration_reference_is_current():
    ref = subprocess.run([zfront_bin(), "--config-reference"], capture_output=True, text=True,
                         check=True).stdout
    doc = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    rows = [line for line in ref.splitlines() if line.startswith("| `")]
    assert len(rows) > 20
    missing = [r for r in rows if r not in doc]
    assert not missing, "docs/configuration.md is stale (scripts/gen-config-doc.sh):\n" + \
        "\n".join(missing)


def test_help_lists_readme_flags():
    out = subprocess.run([zfront_bin(), "--help"], capture_output=True, text=True,
                         check=True).stdout
    readme = open(os.path.join(ROOT, "README.md")).read()
    lines = [line for line in readme.splitlines() if line.strip().startswith("zfront ")]
    flags = {f for line in lines for f in re.findall(r"(--[a-z][a-z-]*)", line)}
    assert {"--app", "--http", "--paste", "--demo"} <= flags
    for flag in sorted(flags):
        assert flag in out, flag
