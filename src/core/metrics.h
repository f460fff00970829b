/* Metrics: a small registry of collectors, rendered as Prometheus text
 * exposition format 0.0.4 (GET /metrics on the admin listener, admin.c) and
 * as the JSON the live status page shows.
 *
 * The core knows no protocol: every module registers one collector
 * (zf_metrics_register, from its configure or start) that adds its own
 * samples when a collection runs, with the helpers below. Samples of one
 * family may come from several collectors (zfront_connections{protocol=...}
 * from every protocol module): a collection groups them under one # HELP /
 * # TYPE header, in the order the families were first seen.
 *
 * Threads: collections run on the loop thread only, so a collector reads
 * loop-thread state directly. Histograms (struct zf_histogram) are the
 * exception: any thread may observe into them (atomic counters). */
#ifndef ZF_METRICS_H
#define ZF_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum zf_metric_type { ZF_METRIC_COUNTER, ZF_METRIC_GAUGE, ZF_METRIC_HISTOGRAM };

/* One collection in progress (opaque; made by zf_metrics_collect). */
struct zf_metrics;

/* Adds one sample to collection m. `name` is the family's full name
 * (counters end in _total, by Prometheus convention; "zfront_" first for
 * zfront's own), `help` one line of text (used by the first sample of the
 * family), `labels` NULL or the label set without braces, already escaped:
 * `protocol="http1",code="2xx"` (zf_metrics_escape for values from outside).
 * A sample whose type differs from its family's first one is dropped.
 * Out of memory drops the sample. */
void zf_metrics_add(struct zf_metrics *m, enum zf_metric_type type, const char *name,
                    const char *help, const char *labels, double value);
static inline void zf_metrics_counter(struct zf_metrics *m, const char *name, const char *help,
                                      const char *labels, uint64_t value)
{
    zf_metrics_add(m, ZF_METRIC_COUNTER, name, help, labels, (double)value);
}
static inline void zf_metrics_gauge(struct zf_metrics *m, const char *name, const char *help,
                                    const char *labels, double value)
{
    zf_metrics_add(m, ZF_METRIC_GAUGE, name, help, labels, value);
}

/* Writes value into dst (cap bytes, NUL-terminated, truncated to fit) with
 * the escapes of a label value (\\, \", \n). Returns dst. */
char *zf_metrics_escape(char *dst, size_t cap, const char *value);

/* ---- histograms ----
 * Fixed buckets, in seconds, shared by every histogram (request latency and
 * queue waits have the same useful range): ZF_HIST_BOUNDS, then +Inf.
 * Observing is lock-free and safe from any thread. */
#define ZF_HIST_NBOUNDS 14
extern const double zf_hist_bounds[ZF_HIST_NBOUNDS];
struct zf_histogram {
    atomic_uint_fast64_t bucket[ZF_HIST_NBOUNDS + 1]; /* not cumulative; the last is +Inf */
    atomic_uint_fast64_t sum_us;
};
/* Records one observation of `us` microseconds. Any thread. */
void zf_histogram_observe(struct zf_histogram *h, uint64_t us);
/* Adds h to m as family `name` (its _bucket/_sum/_count samples). */
void zf_metrics_histogram(struct zf_metrics *m, const char *name, const char *help,
                          const char *labels, const struct zf_histogram *h);

/* The two families every protocol module reports: zfront_connections
 * (open now) and zfront_connections_accepted_total, labelled
 * protocol="NAME" (a static, label-safe name: "http1", "ssh"). accepted
 * UINT64_MAX: the module does not count them. */
void zf_metrics_connections(struct zf_metrics *m, const char *protocol, size_t open,
                            uint64_t accepted);

/* ---- the registry (loop thread) ---- */

/* Adds the samples of one part of the server to m; arg as registered. */
typedef void (*zf_metrics_fn)(struct zf_metrics *m, void *arg);
/* Registers a collector (kept until zf_metrics_clear); registering the same
 * fn and arg twice keeps one. Returns ZF_OK, or ZF_ERROR (table full:
 * ZF_METRICS_MAX collectors, logged). */
#define ZF_METRICS_MAX 32
int zf_metrics_register(zf_metrics_fn fn, void *arg);
/* Forgets every collector (at exit). */
void zf_metrics_clear(void);

/* Runs every collector, the core's own first. Returns the collection (owned
 * by the caller: zf_metrics_free) or NULL when out of memory. */
struct zf_metrics *zf_metrics_collect(void);
void zf_metrics_free(struct zf_metrics *m);
/* Appends the collection in the text format 0.0.4. Returns ZF_OK or
 * ZF_ERROR (out of memory). */
int zf_metrics_render_text(const struct zf_metrics *m, struct evbuffer *out);
/* Appends one JSON object {"series": value, ...} of every counter and gauge
 * sample and of each histogram's _sum and _count (not its buckets), the
 * series written as in the text format. Returns ZF_OK or ZF_ERROR. */
int zf_metrics_render_json(const struct zf_metrics *m, struct evbuffer *out);
/* The sum of every sample of family `name` (0 when none): the status page's
 * totals. */
double zf_metrics_sum(const struct zf_metrics *m, const char *name);

/* ---- counters the core keeps for every protocol (loop thread) ---- */

/* A request ended (its access log line): counted by channel (static
 * string; NULL counts as "http") and status class, its duration observed in
 * zfront_request_duration_seconds. Every protocol calls it where it writes
 * the access log line, whether that log is on or not. */
void zf_metrics_request(const char *channel, int status, uint64_t duration_us);

/* Queue waits: pool.c observes each request's wait when a worker takes it. */
extern struct zf_histogram zf__metrics_queue_wait;

/* Appends one JSON string (quoted, escaped) of s to out. */
void zf_metrics_json_string(struct evbuffer *out, const char *s);

#endif
