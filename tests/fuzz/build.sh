#!/bin/sh
# Builds zfront's libFuzzer targets with clang (ASan + UBSan), outside meson
# and outside `make test`, and runs them. Each target links only the sources
# it needs plus small stubs (fuzz_stubs.c): no Python, no server.
#
#   tests/fuzz/build.sh [OUTDIR]                 build only (OUTDIR: /tmp/build-fuzz)
#   tests/fuzz/build.sh --run SECONDS [OUTDIR]   build, then fuzz each target SECONDS
#   tests/fuzz/build.sh --regress [OUTDIR]       build, then replay every saved
#                                                reproducer (corpus-*/crash-*)
#   tests/fuzz/build.sh --replay [OUTDIR]        build, then replay every input
#                                                of corpus-*/ (seeds and reproducers;
#                                                known-issues counted, not fatal):
#                                                one "fuzz: replay" line per target
#                                                (scripts/run-tests.sh, make test)
#
# --run starts from the seeds (corpus-<t>/seed-*) and the inputs found by
# earlier runs (OUTDIR/corpus-<t>); failures go to OUTDIR/crash-<t>-*, the log
# to OUTDIR/fuzz_<t>.log. Invariants named in known-issues are counted, not
# fatal, unless ZF_FUZZ_IGNORE is set (ZF_FUZZ_IGNORE= makes all fatal).
# --regress ignores nothing and lists the reproducers that still fail.
# Both exit non-zero when something failed.
#
# Environment: CC (clang), ZF_FUZZ_SRC (fuzz another tree's sources, e.g. a
# copy with a fix being tried), ZF_FUZZ_IGNORE, FUZZ_JOBS (parallel jobs).
set -eu

mode=build
run_secs=0
case "${1:-}" in
--run)
    mode=run
    run_secs=${2:?"--run needs a number of seconds"}
    shift 2
    ;;
--regress)
    mode=regress
    shift
    ;;
--replay)
    mode=replay
    shift
    ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-/tmp/build-fuzz}
src=$(cd "${ZF_FUZZ_SRC:-$top}" && pwd)
cc=${CC:-clang}
targets="http1 range config bus h2 ws console lineedit"
mkdir -p "$out"
out=$(cd "$out" && pwd)

cflags="-g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wno-unused-parameter -Wno-unused-function
 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
 -I$src -I$src/src/core $(pkg-config --cflags libevent)"
events="$(pkg-config --libs libevent libevent_pthreads) -lpthread"
f=$here
s=$src/src

echo "fuzz: building $s into $out with $($cc --version | head -1)"
# shellcheck disable=SC2086
$cc $cflags -DZF_FUZZ_HTTP1_C="\"$s/proto/http/http1.c\"" \
    -DZF_FUZZ_H1_PARSE_C="\"$s/proto/http/h1_parse.c\"" -o "$out/fuzz_http1" \
    "$f/fuzz_http1.c" "$f/fuzz_stubs.c" "$s/core/exchange.c" "$s/core/spool.c" "$s/core/log.c" \
    "$s/core/config.c" "$s/core/util.c" "$s/proto/http/http_util.c" -lhttp_parser $events
# shellcheck disable=SC2086
$cc $cflags -o "$out/fuzz_range" "$f/fuzz_range.c" "$s/core/range.c"
# shellcheck disable=SC2086
$cc $cflags -o "$out/fuzz_config" "$f/fuzz_config.c" "$s/core/config.c" "$s/core/log.c" \
    "$s/core/util.c"
# shellcheck disable=SC2086
$cc $cflags -o "$out/fuzz_bus" "$f/fuzz_bus.c" "$s/bus/codec.c" -ljansson
# shellcheck disable=SC2086
$cc $cflags $(pkg-config --cflags libnghttp2) -o "$out/fuzz_h2" "$f/fuzz_h2.c" "$f/fuzz_stubs.c" \
    "$s/proto/http/h2/conn.c" "$s/proto/http/h2/stream.c" "$s/proto/http/h2/response.c" \
    "$s/proto/http/h2/tunnel.c" "$s/proto/http/h2/upgrade.c" "$s/core/exchange.c" "$s/core/spool.c" "$s/core/log.c" \
    "$s/core/config.c" "$s/core/util.c" "$s/proto/http/http_util.c" \
    $(pkg-config --libs libnghttp2 libevent_openssl openssl) $events
# shellcheck disable=SC2086
$cc $cflags -o "$out/fuzz_ws" "$f/fuzz_ws.c" "$f/fuzz_stubs.c" "$s/proto/ws/session.c" \
    "$s/proto/ws/timers.c" "$s/proto/ws/module.c" "$s/core/hub.c" "$s/core/exchange.c" \
    "$s/core/spool.c" "$s/core/log.c" "$s/core/config.c" "$s/core/util.c" \
    $(pkg-config --libs jansson libcrypto) -lwslay $events
# shellcheck disable=SC2086
$cc $cflags $(pkg-config --cflags libssh python3-embed) -DZF_SSH_IN_MAX=4096 -o "$out/fuzz_console" \
    "$f/fuzz_console.c" "$s/proto/ssh/console.c" "$s/core/log.c" "$s/core/util.c" \
    $(pkg-config --libs libssh) $events
# shellcheck disable=SC2086
$cc $cflags $(pkg-config --cflags python3-embed) -DZF_FUZZ_PYDIR="\"$src/python\"" \
    -o "$out/fuzz_lineedit" "$f/fuzz_lineedit.c" $(pkg-config --libs python3-embed)
echo "fuzz: built $(for t in $targets; do printf 'fuzz_%s ' "$t"; done)"

status=0
if [ "$mode" = regress ]; then
    for t in $targets; do
        for r in "$here/corpus-$t"/crash-*; do
            [ -f "$r" ] || continue
            if ZF_FUZZ_IGNORE= "$out/fuzz_$t" "$r" >"$out/regress.log" 2>&1; then
                echo "fuzz: fixed   $t/$(basename "$r")"
            else
                why=$(grep -o 'invariant \[[a-z0-9-]*\]\|runtime error.*\|ERROR: AddressSanitizer: [a-z-]*' \
                    "$out/regress.log" | head -n 1)
                echo "fuzz: FAILS   $t/$(basename "$r"): $why"
                status=1
            fi
        done
    done
    exit $status
fi
[ "$mode" = run ] || [ "$mode" = replay ] || exit 0

if [ -z "${ZF_FUZZ_IGNORE+set}" ]; then
    ZF_FUZZ_IGNORE=$(sed 's/#.*//' "$here/known-issues" | tr -s ' \t\n' '\n' | grep . |
        paste -sd, -)
fi
if [ "$mode" = replay ]; then
    export ZF_FUZZ_IGNORE
    for t in $targets; do
        n=$(find "$here/corpus-$t" -maxdepth 1 -type f | wc -l)
        # shellcheck disable=SC2046
        if "$out/fuzz_$t" $(find "$here/corpus-$t" -maxdepth 1 -type f | sort) \
            >"$out/replay-$t.log" 2>&1; then
            echo "fuzz: replay $t: ok ($n inputs)"
        else
            why=$(grep -o 'invariant \[[a-z0-9-]*\]\|runtime error.*\|ERROR: AddressSanitizer: [a-z-]*' \
                "$out/replay-$t.log" | head -n 1)
            echo "fuzz: replay $t: FAILS ($why; see $out/replay-$t.log)"
            status=1
        fi
    done
    exit $status
fi
export ZF_FUZZ_IGNORE ZF_FUZZ_STATS=1
[ -z "$ZF_FUZZ_IGNORE" ] || echo "fuzz: not fatal (known issues): $ZF_FUZZ_IGNORE"
jobs=""
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
    jobs="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"
fi
for t in $targets; do
    corpus="$out/corpus-$t"
    mkdir -p "$corpus"
    cp "$here/corpus-$t"/seed-* "$corpus/"
    dict=""
    [ -f "$here/$t.dict" ] && dict="-dict=$here/$t.dict"
    echo "fuzz: running fuzz_$t for ${run_secs}s"
    # shellcheck disable=SC2086
    if ! (cd "$out" && "./fuzz_$t" -max_total_time="$run_secs" -print_final_stats=1 \
        $jobs -artifact_prefix="$out/crash-$t-" $dict "$corpus" >"$out/fuzz_$t.log" 2>&1); then
        echo "fuzz: fuzz_$t FAILED; see $out/fuzz_$t.log and $out/crash-$t-*"
        grep -A2 '==== zfront\|runtime error\|ERROR: ' "$out/fuzz_$t.log" | head -n 8 || true
        status=1
    fi
    grep '^#[0-9]' "$out/fuzz_$t.log" | tail -n 1 || true
    grep 'stat::average_exec_per_sec\|^fuzz_http1: ' "$out/fuzz_$t.log" || true
done
exit $status
