"""Turns one run's results (the JSON the harness writes) into markdown."""

import statistics

# (key, column title, path into a server's results, scale, format, higher_is_better)
METRICS = [
    ("blob_mbps", "blob MB/s", ("blob", "mbps"), 1, "%.0f", True),
    ("blob_rps", "blob req/s", ("blob", "rps"), 1, "%.2f", True),
    ("blob_max", "blob max s", ("blob", "max_time"), 1, "%.2f", False),
    ("probe_med", "tiny med ms", ("blob", "probe", "median"), 1e3, "%.1f", False),
    ("probe_max", "tiny max ms", ("blob", "probe", "max"), 1e3, "%.1f", False),
    ("gen_mbps", "gen MB/s", ("gen", "mbps"), 1, "%.0f", True),
    ("gen_max", "gen max s", ("gen", "max_time"), 1, "%.2f", False),
    ("gen_probe_med", "gen tiny med ms", ("gen", "probe", "median"), 1e3, "%.1f", False),
    ("gen_probe_max", "gen tiny max ms", ("gen", "probe", "max"), 1e3, "%.1f", False),
    ("hello_rps", "hello req/s", ("hello", "rps"), 1, "%.0f", True),
    ("hello_p99", "hello p99 ms", ("hello", "p99"), 1e3, "%.2f", False),
    ("hello_probe_max", "hello tiny max ms", ("hello", "probe", "max"), 1e3, "%.1f", False),
    ("upload_s", "upload s", ("upload", "wall"), 1, "%.2f", False),
    ("rss_blob", "RSS blob MB", ("blob", "rss_peak"), 1e-6, "%.0f", False),
    ("rss_gen", "RSS gen MB", ("gen", "rss_peak"), 1e-6, "%.0f", False),
    ("rss_hello", "RSS hello MB", ("hello", "rss_peak"), 1e-6, "%.0f", False),
]


def merge_rounds(rounds):
    """One result tree from several rounds' trees of the same shape: the
    median of each number, lists joined, failures and notes collected."""
    return _merge([r for r in rounds if r])


def _merge(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    if all(isinstance(v, dict) for v in values):
        keys = []
        for v in values:
            keys += [k for k in v if k not in keys]
        out = {}
        for k in keys:
            got = [v[k] for v in values if k in v]
            if k == "failed":
                out[k] = "; ".join("round %d: %s" % (i + 1, v[k])
                                   for i, v in enumerate(values) if v.get(k))
            elif k == "notes":
                out[k] = sorted({n for g in got for n in g})
            else:
                out[k] = _merge(got)
        return out
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return statistics.median(values)
    if all(isinstance(v, list) for v in values):
        return [x for v in values for x in v]
    return values[0]


def value(res, path):
    """The metric at `path`, or None when missing or when that scenario failed."""
    cur = res
    for i, key in enumerate(path):
        if not isinstance(cur, dict) or key not in cur:
            return None
        if i == 0 and cur[key].get("failed"):
            return None
        cur = cur[key]
    return cur if isinstance(cur, (int, float)) else None


def cell(res, metric):
    _, _, path, scale, fmt, _ = metric
    v = value(res, path)
    if v is not None:
        return fmt % (v * scale)
    scen = res.get(path[0]) if isinstance(res, dict) else None
    if isinstance(scen, dict) and scen.get("failed"):
        return "fail"
    return "–"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def used_metrics(runs):
    """Metrics whose scenario ran in this report."""
    scen = set()
    for per_server in runs.values():
        for res in per_server.values():
            scen.update(k for k, v in res.items() if isinstance(v, dict))
    return [m for m in METRICS if m[2][0] in scen]


def targets(per_server, baseline):
    """Issue-3 targets for zfront; returns markdown lines (empty if not measurable)."""
    z, ng = per_server.get(baseline), per_server.get("nginx")
    uw = per_server.get("uwsgi")
    if baseline != "zfront" or not z or "skipped" in z:
        return []
    checks = []

    def check(name, zval, ref, refname, ok_fn, fmt):
        if zval is None or ref is None:
            checks.append("- %s: not measured" % name)
            return
        ok = ok_fn(zval, ref)
        checks.append("- %s: %s (zfront %s, %s %s)" % (
            name, "**met**" if ok else "**missed**", fmt(zval), refname, fmt(ref)))

    if ng and "skipped" not in ng:
        check("blob MB/s ≥ 0.95× nginx", value(z, ("blob", "mbps")),
              value(ng, ("blob", "mbps")), "nginx", lambda a, b: a >= 0.95 * b,
              lambda v: "%.0f MB/s" % v)
        for scen, what in (("blob", "file"), ("gen", "generated")):
            check("tiny-page max latency during %s blobs ≤ nginx's" % what,
                  value(z, (scen, "probe", "max")), value(ng, (scen, "probe", "max")), "nginx",
                  lambda a, b: a <= b, lambda v: "%.1f ms" % (v * 1e3))
    if uw and "skipped" not in uw:
        check("hello req/s ≥ 1.2× uWSGI", value(z, ("hello", "rps")),
              value(uw, ("hello", "rps")), "uWSGI", lambda a, b: a >= 1.2 * b,
              lambda v: "%.0f req/s" % v)
        check("10 uploads no slower than uWSGI", value(z, ("upload", "wall")),
              value(uw, ("upload", "wall")), "uWSGI", lambda a, b: a <= b,
              lambda v: "%.2f s" % v)
    return checks


GROUPS = [
    ("Downloads (1, 2, 2b)", {"blob_mbps", "blob_rps", "blob_max", "probe_med", "probe_max",
                              "gen_mbps", "gen_max", "gen_probe_med", "gen_probe_max"}),
    ("Hello, upload, memory (3, 4, 5)", {"hello_rps", "hello_p99", "hello_probe_max",
                                         "upload_s", "rss_blob", "rss_gen", "rss_hello"}),
]


def fmt_ratio(r):
    if r is None:
        return "–"
    return "%.2f" % r if r >= 0.1 else "%.2g" % r


def server_tables(per_server, metrics, baseline):
    """A results table for these metrics, then baseline ÷ each peer."""
    rows = [[res.get("label", name)] + [cell(res, mt) for mt in metrics]
            for name, res in per_server.items() if "skipped" not in res]
    lines = table(["server"] + [mt[1] for mt in metrics], rows) + [""]
    base = per_server.get(baseline)
    if not base or "skipped" in base:
        return lines
    rows = []
    for name, res in per_server.items():
        if name == baseline or "skipped" in res:
            continue
        rows.append([res.get("label", name)] + [
            fmt_ratio(ratio(value(base, mt[2]), value(res, mt[2]))) for mt in metrics])
    lines += ["%s ÷ peer, same run (↑: higher is better for %s; ↓: lower is better):"
              % (baseline, baseline), ""]
    lines += table(["peer"] + ["%s %s" % (mt[1], "↑" if mt[5] else "↓") for mt in metrics],
                   rows) + [""]
    return lines


def overlap_notes(data, threads):
    """Lines naming the probes that ended after their load (per round)."""
    out = []
    rounds = [r.get(threads, {}) for r in data.get("rounds") or [data["runs"]]]
    names = list(data["runs"].get(threads, {}))
    for name in names:
        for scen, load in (("blob", "the downloads"), ("gen", "the downloads"),
                           ("hello", "wrk")):
            counts = []
            for per_server in rounds:
                pr = per_server.get(name, {}).get(scen, {}).get("probe")
                if isinstance(pr, dict) and "during_load" in pr:
                    counts.append((pr["during_load"], pr["count"]))
            if counts and any(d < c for d, c in counts):
                out.append("- %s %s: %s of %d probes ended while %s ran" % (
                    name, scen, ", ".join(str(d) for d, _ in counts), counts[0][1], load))
    return out


def settings(p):
    return ("Settings: %d round%s over all servers (each number is the median of the rounds); "
            "file %d MB (%d bytes); %d concurrent downloads; %d tiny-page probes %.0f ms apart "
            "during them; `wrk -t%d -c%d -d%ds` on /hello, with %d probes from a new connection "
            "meanwhile; %d concurrent %d MB uploads. Loopback only. MB = 10^6 bytes." % (
                p.get("rounds", 1), "" if p.get("rounds", 1) == 1 else "s", p["blob_mb"],
                p["blob_bytes"], p["downloads"], p["probes"], p["probe_gap"] * 1e3,
                p["wrk_threads"], p["wrk_conns"], p["wrk_seconds"], p["hello_probes"],
                p["uploads"], p["upload_mb"]))


def render(data, baseline="zfront"):
    """Markdown for a whole run: settings, then per thread count a results table,
    a ratio table (baseline ÷ each peer) and the issue-3 targets."""
    p, m = data["params"], data["machine"]
    lines = ["# zfront benchmark, %s (%s mode)" % (data["date"], data["mode"]), ""]
    lines.append("Machine: %s; %s cores; %s RAM; kernel %s; Debian %s." % (
        m.get("cpu"), m.get("cores"), m.get("memory"), m.get("kernel"), m.get("debian")))
    lines.append("Peers: " + ", ".join("%s %s" % kv for kv in sorted(m.get("versions", {}).items()))
                 + ".")
    if m.get("zfront"):
        lines.append("zfront: %s." % m["zfront"])
    lines.append("")
    if data["runs"]:  # (when only bench/h2.py ran, its section says its settings)
        lines += [settings(p), ""]
    for line in data.get("skipped", []):
        lines.append("- skipped: " + line)
    if data.get("interrupted"):
        lines.append("- **run interrupted**: partial results")
    lines.append("")
    for threads, per_server in data["runs"].items():
        lines += ["## %s worker thread%s" % (threads, "" if threads == "1" else "s"), ""]
        for title, group in GROUPS:
            metrics = [mt for mt in used_metrics({threads: per_server}) if mt[0] in group]
            if metrics:
                lines += ["### %s" % title, ""] + server_tables(per_server, metrics, baseline)
        checks = targets(per_server, baseline)
        if checks:
            lines += ["### Issue-3 targets", ""] + checks + [""]
        failures = overlap_notes(data, threads)
        for name, res in per_server.items():
            for scen, r in res.items():
                if isinstance(r, dict) and r.get("failed"):
                    failures.append("- %s %s: %s" % (name, scen, r.get("failed")))
                elif isinstance(r, dict) and r.get("notes"):
                    failures.extend("- %s %s: %s" % (name, scen, n) for n in r["notes"])
        if failures:
            lines += ["Notes:", ""] + failures + [""]
    if data.get("h2"):
        lines += h2_section(data["h2"], baseline)
    if data.get("overload"):
        lines += overload_section(data["overload"])
    return "\n".join(lines) + "\n"


def h2_section(h2, baseline):
    """Markdown for bench/h2.py's results: req/s and MB/s per scenario and
    server, then baseline ÷ each other server (req/s)."""
    lines = ["## HTTP/2 (bench/h2.py, h2load)", ""]
    if h2.get("skipped"):
        return lines + ["- skipped: " + h2["skipped"], ""]
    p = h2.get("params", {})
    lines += ["%s-byte file (10 MB for big-*), %s s per scenario, zfront --threads %s; "
              "see bench/h2.py for the scenarios." % (p.get("size"), p.get("seconds"),
                                                     p.get("zfront_threads")), ""]
    results = h2.get("results", [])
    servers, scens, by = [], [], {}
    for r in results:
        if r["server"] not in servers:
            servers.append(r["server"])
        if r["scenario"] not in scens:
            scens.append(r["scenario"])
        by[(r["server"], r["scenario"])] = r
    others = [s for s in servers if s != baseline]
    header = ["scenario"] + ["%s req/s" % s for s in servers] + ["%s MB/s" % s for s in servers]
    if baseline in servers:
        header += ["%s ÷ %s req/s" % (baseline, s) for s in others]
    rows = []
    for sc in scens:
        row = [sc]
        for key, fmt in (("rps", "%.0f"), ("mbps", "%.1f")):
            for s in servers:
                v = by.get((s, sc), {}).get(key)
                row.append(fmt % v if v is not None else "–")
        if baseline in servers:
            for s in others:
                row.append(fmt_ratio(ratio(by.get((baseline, sc), {}).get("rps"),
                                           by.get((s, sc), {}).get("rps"))))
        rows.append(row)
    lines += table(header, rows) + [""]
    errs = ["- %s %s: %s" % (r["server"], r["scenario"], r["error"])
            for r in results if r.get("error")]
    if errs:
        lines += ["Notes:", ""] + sorted(set(errs)) + [""]
    return lines


def overload_section(ov):
    """Markdown for bench/overload.py's results (it renders its own table)."""
    lines = ["## Overload (bench/overload.py)", ""]
    if ov.get("skipped"):
        return lines + ["- skipped: " + ov["skipped"], ""]
    p = ov.get("params", {})
    lines += ["%d slowloris connections against a server at `ulimit -n %d`; %d clients that "
              "read nothing of a %d MB generated body; every one of %d workers stuck; load "
              "held %s s per part. /hello probed from new connections meanwhile; see "
              "bench/overload.py." % (p.get("slowloris", 0), p.get("nofile", 0),
                                      p.get("nonreaders", 0), p.get("file_mb", 0),
                                      p.get("threads", 0), p.get("hold")), ""]
    return lines + [ov.get("table", ""), ""]
