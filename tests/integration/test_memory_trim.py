"""Memory after a spike: once the server is idle again after a busy period,
it returns the free heap memory to the system (malloc_trim), so the
resident size falls back near where it started instead of staying at the
peak. The spike is bench/mem_spike.py's: slow clients that each leave a
generated body queued in the server, then all close."""
import os
import subprocess
import sys
import time

import pytest

from zftest import REPO, wait_until, zfront_bin

sys.path.insert(0, os.path.join(REPO, "bench"))
import mem_spike  # noqa: E402

CLIENTS = 300
SIZE = 2 << 20
# Measured (bench/mem_spike.py --clients 300 --size 2097152, 4 threads):
# start 16 MiB, peak ~360 MiB, without the trim 60-130 MiB stays after the
# clients left, with it ~18 MiB. The bound sits between, far from both.
BOUND_MIB = 20


def _sanitized():
    out = subprocess.run(["ldd", zfront_bin()], capture_output=True, text=True).stdout
    return "libasan" in out or "libtsan" in out


@pytest.mark.skipif(_sanitized(), reason="a sanitizer's allocator does not give memory back "
                    "the way glibc's malloc_trim does: RSS figures mean nothing there")
def test_rss_returns_near_its_start_after_a_spike(server_factory):
    srv = server_factory("--threads", "4", "--set", "memory.trim_idle=1s",
                         "--set", "memory.trim_growth=16m", app="opsapp")
    assert srv.get("/status")[0] == 200
    start = mem_spike.rss_mib(srv.pid)
    socks = mem_spike.slow_clients(srv.port, CLIENTS, SIZE, time.monotonic() + 60)
    try:
        assert len(socks) == CLIENTS
        # the spike really holds memory (else this test would prove nothing)
        peak = wait_until(lambda: mem_spike.rss_mib(srv.pid) > start + 150, timeout=60)
        assert peak, (start, mem_spike.rss_mib(srv.pid))
        mem_spike.wait_plateau(srv.pid, 20)  # every client holds its part
    finally:
        for s in socks:
            s.close()
    peak = mem_spike.rss_mib(srv.pid)
    after = wait_until(lambda: mem_spike.rss_mib(srv.pid) < start + BOUND_MIB, timeout=20)
    assert after, (start, peak, mem_spike.rss_mib(srv.pid), srv.log()[-2000:])
    # still serving
    assert srv.get("/status")[0] == 200

