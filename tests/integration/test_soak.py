"""bench/soak (issue 13, "Soak"): a very short soak against the real binary,
and the verdict logic on made-up series.

The short run checks the report's structure (rows, verdicts, the spike
result, the markdown table, a PNG) and that every kind of traffic did work
without an error: HTTP/1.1 keep-alive, new connections, blob download,
upload and slow readers, h2, WebSocket sessions, events and publishes,
WebDAV, SSH console sessions, the probe and the spike clients (and the bus
when the binary has --bus-dir). No timings are asserted."""
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from zftest import REPO, zfront_bin

SOAK = os.path.join(REPO, "bench", "soak")


def load_soak():
    loader = importlib.machinery.SourceFileLoader("zf_soak", SOAK)
    spec = importlib.util.spec_from_loader("zf_soak", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def short_soak(tmp_path_factory):
    out = tmp_path_factory.mktemp("soak")
    p = subprocess.run([sys.executable, SOAK, "--minutes", "0.5", "--spike-clients", "50",
                        "--ws-clients", "5", "--ws-reconnect", "6", "--ssh-gap", "3",
                        "--bin", zfront_bin(), "--out", str(out)],
                       capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    found = [f for f in os.listdir(out) if f.endswith(".json")]
    assert len(found) == 1, (os.listdir(out), p.stdout[-2000:])
    with open(os.path.join(out, found[0])) as f:
        result = json.load(f)
    return result, p.stdout


def test_every_kind_of_traffic_worked_without_errors(short_soak):
    result, out = short_soak
    soak = load_soak()
    want = soak.KINDS + (soak.BUS_KINDS if "--bus-dir" in result["command"] else [])
    assert result["kinds"] == want
    for kind in want:
        assert result["ok"][kind] > 0, (kind, out[-3000:])
        assert result["errors"][kind] == 0, (kind, result["error_messages"][kind])
    assert result["ok"]["spike"] == 50
    assert result["exit_status"] == 0
    assert result["loops_still_running"] == []


def test_report_structure(short_soak):
    result, _ = short_soak
    rows = result["rows"]
    assert len(rows) >= 5
    for r in rows:
        for key in ("t_start", "t_end", "rss_mib", "rss_max_mib", "fds", "threads", "p50_ms",
                    "p99_ms", "loop_p99_ms", "probes", "ok", "err"):
            assert key in r, key
        assert r["rss_mib"] > 0 and r["fds"] > 0 and r["threads"] > 0
        assert set(r["ok"]) == set(result["kinds"]) == set(r["err"])
    # the rows cover the run and every operation is in exactly one row
    assert rows[-1]["t_end"] >= 30
    for kind in result["kinds"]:
        assert sum(r["ok"][kind] for r in rows) <= result["ok"][kind]
    assert any(r.get("note") == "spike" for r in rows)
    assert set(result["verdicts"]) == {"rss_mib", "fds", "threads", "p50_ms", "p99_ms"}
    for v in result["verdicts"].values():
        assert v["verdict"].split()[0] in ("flat", "growing", "falling", "step", "n/a"), v
    s = result["spike"]
    assert s["clients"] == 50 and s["pre_mib"] > 0 and s["peak_mib"] >= s["pre_mib"]
    files = result["files"]
    with open(files["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(files["md"]) as f:
        md = f.read()
    assert "| min | RSS MiB |" in md and "**Memory after a spike**" in md
    assert md.count("\n| ") >= len(rows) + 2 + len(result["kinds"])


# ------------------------------------------------------------ verdict logic


def series(values, every=2.0):
    return [{"t": i * every, "rss_mib": v, "fds": 40, "threads": 7}
            for i, v in enumerate(values)]


def rows_of(samples, width=60.0):
    rows, t = [], 0.0
    while t < samples[-1]["t"]:
        inside = [s for s in samples if t <= s["t"] < t + width]
        rows.append({"t_start": t, "rss_mib": inside[-1]["rss_mib"], "fds": 40, "threads": 7,
                     "p50_ms": 1.0, "p99_ms": 3.0})
        t += width
    return rows


PLAN = {"start": 60.0, "end": 90.0, "recovery": 30.0, "clients": 1000}


def test_verdicts_tell_flat_from_growing():
    soak = load_soak()
    n = 300  # 10 minutes, a sample every 2 s
    lat = [{"t": i * 10.0 + 5, "p50_ms": 1.0, "p99_ms": 3.0} for i in range(60)]
    spike = lambda i: 700.0 if 30 <= i < 45 else None  # noqa: E731 -- 60..90 s
    flat = series([spike(i) or 40.0 + (i % 3) for i in range(n)])
    v = soak.verdicts(flat, lat, rows_of(flat), PLAN, 600.0)
    assert v["rss_mib"]["verdict"] == "flat", v["rss_mib"]
    assert v["fds"]["verdict"] == v["threads"]["verdict"] == "flat"
    leak = series([spike(i) or 40.0 + i * 0.2 for i in range(n)])  # +6 MiB a minute
    v = soak.verdicts(leak, lat, rows_of(leak), PLAN, 600.0)
    assert v["rss_mib"]["verdict"].startswith("growing"), v["rss_mib"]
    slow_lat = [dict(b, p99_ms=3.0 + b["t"]) for b in lat]
    v = soak.verdicts(flat, slow_lat, rows_of(flat), PLAN, 600.0)
    assert v["p99_ms"]["verdict"].startswith("growing") and v["p50_ms"]["verdict"] == "flat"


def test_spike_verdict_returned_or_not():
    soak = load_soak()
    back = series([40.0 if i < 30 else 700.0 if i < 45 else 45.0 for i in range(150)])
    s = soak.spike_verdict(back, PLAN)
    assert s["verdict"].startswith("returned") and s["peak_mib"] == 700.0
    assert s["returned_after_s"] <= 2.0
    stuck = series([40.0 if i < 30 else 700.0 if i < 45 else 650.0 for i in range(150)])
    s = soak.spike_verdict(stuck, PLAN)
    assert s["verdict"].startswith("did NOT return"), s


def test_verdicts_tell_a_step_at_the_spike_from_growth_after_it():
    soak = load_soak()
    n = 300
    lat = [{"t": i * 10.0 + 5, "p50_ms": 1.0, "p99_ms": 3.0} for i in range(60)]
    plan = {"start": 150.0, "end": 180.0, "recovery": 30.0, "clients": 1000}
    # 40 MiB before the spike (at 150..180 s), 55 after it, and flat since
    step = series([40.0 if i < 75 else 700.0 if i < 90 else 55.0 for i in range(n)])
    v = soak.verdicts(step, lat, rows_of(step), plan, 600.0)
    assert v["rss_mib"]["verdict"].startswith("step at the spike"), v["rss_mib"]
    # the same step, then still growing (+3 MiB a minute, up and down)
    creep = series([40.0 if i < 75 else 700.0 if i < 90 else 55.0 + i * 0.1 - (i % 2)
                    for i in range(n)])
    v = soak.verdicts(creep, lat, rows_of(creep), plan, 600.0)
    assert v["rss_mib"]["verdict"].startswith("growing"), v["rss_mib"]
