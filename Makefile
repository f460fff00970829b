# Thin wrapper: dependencies, build, run, test, bench. The real build is meson.
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all deps build run test bench bench-ws bench-tls-floor bench-dav bench-bus bench-soak asan test-asan test-tsan fuzz fuzz-regress format clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The bundled demo site on 127.0.0.1:8080 (and every other built module's default port).
run: build
	./$(BUILD)/zfront --demo

test: build
	BUILD=$(BUILD) ./scripts/run-tests.sh

# Side-by-side benchmarks (docs/benchmarks.md); BENCH_ARGS=--short for a quick run.
bench: build
	./bench/setup.sh
	ZFRONT=$(CURDIR)/$(BUILD)/zfront ./bench/run $(BENCH_ARGS)

# WebDAV anchors (docs/benchmarks.md): zfront --demo beside Apache mod_dav_fs, nginx dav,
# PyWebDAV; BENCH_DAV_ARGS=--short for a quick run.
bench-dav: build
	./bench/setup.sh
	ZFRONT=$(CURDIR)/$(BUILD)/zfront ./bench/dav/run $(BENCH_DAV_ARGS)

# WebSocket fan-out (docs/benchmarks.md): zfront beside python3-websockets and
# Autobahn/Twisted, load from the C client bench/wsload.c; BENCH_WS_ARGS=--n 100 for a quick run.
bench-ws: build
	./bench/setup.sh
	ZFRONT=$(CURDIR)/$(BUILD)/zfront ./bench/ws_fanout.py $(BENCH_WS_ARGS)

# What OpenSSL itself keeps per idle TLS server connection, by allocation site (the floor
# under wss:// idle memory; docs/benchmarks.md). TLS_FLOOR_N connections (default 1,000).
TLS_FLOOR_N ?= 1000
bench-tls-floor:
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	gcc -O2 -Wall -o $$d/tls_floor bench/tls_floor.c -lssl -lcrypto && \
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
		-keyout $$d/key.pem -out $$d/cert.pem 2>/dev/null && \
	$$d/tls_floor $$d/cert.pem $$d/key.pem $(TLS_FLOOR_N)

# Soak (docs/benchmarks.md): one instance under mixed HTTP/1.1, h2, WebSocket, WebDAV, SSH
# (and bus) traffic with a load spike for SOAK_MINUTES; RSS, fds, threads and probe latency
# per minute in bench/results/soak-*.{md,json,png}. SOAK_ARGS=--short for a 2-minute run.
SOAK_MINUTES ?= 20
bench-soak: build
	./bench/soak --minutes $(SOAK_MINUTES) --bin $(CURDIR)/$(BUILD)/zfront $(SOAK_ARGS)

# The bus hop (docs/benchmarks.md): publish in instance A -> WebSocket client of instance B,
# over the ZeroMQ bus beside Redis pub/sub; BENCH_BUS_ARGS=--short for a quick run (< 1 min).
bench-bus: build
	./bench/setup.sh
	ZFRONT=$(CURDIR)/$(BUILD)/zfront ./bench/bus.py $(BENCH_BUS_ARGS)

# AddressSanitizer + UndefinedBehaviorSanitizer build; runs every suite against it.
$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

# Leaks are checked too (CPython's own allocations are suppressed: tests/lsan.supp).
test-asan: asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	    BUILD=$(ASAN_BUILD) ./scripts/run-tests.sh

# ThreadSanitizer build; runs the suites that exercise threads (workers and
# suspension, console threads, tasks, the hub's Python listeners, the bus, signals and
# shutdown) against it, plus every test marked `tsan`; any report fails the
# test it appeared in (tests/integration/zftest.py, docs/fuzzing.md). 5-7 min.
TSAN_BUILD ?= build-tsan
TSAN_SUITES ?= $(addprefix tests/integration/test_,wsgi.py slow_clients.py tasks.py \
    ssh_console.py ws.py ws_tls.py ws_h2.py ws_client.py signals.py shutdown.py shutdown_hooks.py \
    overload_workers.py clock.py bus.py bus_peers.py)
$(TSAN_BUILD)/build.ninja:
	meson setup $(TSAN_BUILD) -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug

test-tsan: deps $(TSAN_BUILD)/build.ninja
	ninja -C $(TSAN_BUILD) zfront
	ZF_TSAN=1 ZFRONT_TSAN_BIN=$(CURDIR)/$(TSAN_BUILD)/zfront \
	    ZFRONT_BIN=$(CURDIR)/$(TSAN_BUILD)/zfront \
	    /usr/bin/python3 -m pytest -q $(TSAN_SUITES) $$(grep -l 'mark.tsan' tests/integration/test_*.py)

# libFuzzer targets (docs/fuzzing.md), FUZZ_SECONDS per target (FUZZ_JOBS parallel jobs);
# `make test` replays their corpora (build.sh --replay), `fuzz-regress` the reproducers strictly.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 300
fuzz:
	./tests/fuzz/build.sh --run $(FUZZ_SECONDS) $(FUZZ_BUILD)

fuzz-regress:
	./tests/fuzz/build.sh --regress $(FUZZ_BUILD)

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
