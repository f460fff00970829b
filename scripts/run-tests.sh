#!/bin/sh
# Runs every test suite (C unit tests with meson, integration tests with
# pytest) and ends with one summary line over all of them:
#   N passed, N failed
set -u
BUILD=${BUILD:-build}
PY=/usr/bin/python3
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

meson test -C "$BUILD" --print-errorlogs --num-processes 2
unit_rc=$?
unit_json="$BUILD/meson-logs/testlog.json"
set -- $($PY - "$unit_json" <<'PYEOF'
import json, sys
ok = bad = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if r.get("result") in ("OK", "EXPECTEDFAIL", "SKIP"):
            ok += 1
        else:
            bad += 1
except OSError:
    bad = 1
print(ok, bad)
PYEOF
)
unit_ok=$1
unit_bad=$2

ZFRONT_BIN="$top/$BUILD/zfront" $PY -m pytest -p no:cacheprovider \
    --junitxml="$BUILD/pytest.xml" ${PYTEST_ARGS:-} tests/integration
py_rc=$?
set -- $($PY - "$BUILD/pytest.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = fail = skip = 0
for s in suites:
    tests += int(s.get("tests", 0))
    fail += int(s.get("failures", 0)) + int(s.get("errors", 0))
    skip += int(s.get("skipped", 0))
print(tests - fail - skip, fail)
PYEOF
)
py_ok=$1
py_bad=$2

passed=$((unit_ok + py_ok))
failed=$((unit_bad + py_bad))
if [ $unit_rc -ne 0 ] && [ "$unit_bad" -eq 0 ]; then failed=$((failed + 1)); fi
if [ $py_rc -ne 0 ] && [ $py_rc -ne 5 ] && [ "$py_bad" -eq 0 ]; then failed=$((failed + 1)); fi
echo "unit: $unit_ok passed, $unit_bad failed; integration: $py_ok passed, $py_bad failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
