#!/bin/sh
# Runs every test suite (C unit tests with meson, integration tests with
# pytest, the fuzz corpora replayed through their targets) and ends with
# one summary line over all of them:
#   N passed, N failed, N skipped
# A skipped test is neither passed nor failed. A suite that ran no test at
# all (nothing collected, a collection error, no result file) is a failure.
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
ok = bad = skip = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if r.get("result") in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r.get("result") == "SKIP":
            skip += 1
        else:
            bad += 1
except OSError:
    bad = 1
if ok + bad == 0:
    bad = 1  # no unit test ran
print(ok, bad, skip)
PYEOF
)
unit_ok=$1
unit_bad=$2
unit_skip=$3

ZFRONT_BIN="$top/$BUILD/zfront" $PY -m pytest -p no:cacheprovider \
    --junitxml="$BUILD/pytest.xml" ${PYTEST_ARGS:-} tests/integration
py_rc=$?
set -- $($PY - "$BUILD/pytest.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1, 0)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = fail = skip = 0
for s in suites:
    tests += int(s.get("tests", 0))
    fail += int(s.get("failures", 0)) + int(s.get("errors", 0))
    skip += int(s.get("skipped", 0))
if tests - skip == 0 and fail == 0:
    fail = 1  # an empty run proves nothing
print(tests - fail - skip if tests - fail - skip > 0 else 0, fail, skip)
PYEOF
)
py_ok=$1
py_bad=$2
py_skip=$3

# Every input saved under tests/fuzz/corpus-*/ (seeds and reproducers) is
# replayed through its libFuzzer target (docs/fuzzing.md): one test per
# target; skipped when clang is missing.
fuzz_ok=0
fuzz_bad=0
fuzz_skip=0
if command -v "${CC:-clang}" >/dev/null 2>&1; then
    ./tests/fuzz/build.sh --replay "$BUILD/fuzz" >"$BUILD/fuzz-replay.log" 2>&1
    fuzz_rc=$?
    grep '^fuzz: replay' "$BUILD/fuzz-replay.log"
    fuzz_ok=$(grep -c '^fuzz: replay .*: ok' "$BUILD/fuzz-replay.log")
    fuzz_bad=$(grep -c '^fuzz: replay .*: FAILS' "$BUILD/fuzz-replay.log")
    if [ $fuzz_rc -ne 0 ] && [ "$fuzz_bad" -eq 0 ]; then
        tail -n 20 "$BUILD/fuzz-replay.log"
        fuzz_bad=1 # the targets did not build
    fi
else
    echo "fuzz: ${CC:-clang} not found: corpus replay skipped"
    fuzz_skip=1
fi

passed=$((unit_ok + py_ok + fuzz_ok))
failed=$((unit_bad + py_bad + fuzz_bad))
if [ $unit_rc -ne 0 ] && [ "$unit_bad" -eq 0 ]; then failed=$((failed + 1)); fi
# pytest: 5 = nothing collected, 2 = interrupted (collection errors), 3/4 =
# internal or usage error: all failures, whatever the XML says
if [ $py_rc -ne 0 ] && [ "$py_bad" -eq 0 ]; then failed=$((failed + 1)); fi
skipped=$((unit_skip + py_skip + fuzz_skip))
echo "unit: $unit_ok passed, $unit_bad failed, $unit_skip skipped;" \
     "integration: $py_ok passed, $py_bad failed, $py_skip skipped;" \
     "fuzz replay: $fuzz_ok passed, $fuzz_bad failed, $fuzz_skip skipped"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
