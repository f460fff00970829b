/* Metrics registry and collections (see metrics.h), and the samples of the
 * core itself: requests by channel and status class, latency, the worker
 * pool and its queue, output budget, admission, hub, process. */
#include <dirent.h>
#include <event2/buffer.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "exchange.h"
#include "hub.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "server.h"

const double zf_hist_bounds[ZF_HIST_NBOUNDS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25,  0.5,    1,     2.5,  5,     10,   30};

struct sample {
    char *series; /* "name{labels}" as written */
    double value;
};

struct family {
    const char *name, *help;
    enum zf_metric_type type;
    struct sample *v;
    size_t n, cap;
};

struct zf_metrics {
    struct family *fam;
    size_t n, cap;
};

static struct {
    zf_metrics_fn fn;
    void *arg;
} collectors[ZF_METRICS_MAX];
static size_t ncollectors;

/* ------------------------------------------------------------ histograms */

void zf_histogram_observe(struct zf_histogram *h, uint64_t us)
{
    double s = (double)us / 1e6;
    size_t i = 0;
    while (i < ZF_HIST_NBOUNDS && s > zf_hist_bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

/* ------------------------------------------------------------ collections */

static struct family *family(struct zf_metrics *m, enum zf_metric_type type, const char *name,
                             const char *help)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->fam[i].name, name) == 0)
            return m->fam[i].type == type ? &m->fam[i] : NULL;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        struct family *f = realloc(m->fam, cap * sizeof *f);
        if (!f)
            return NULL;
        m->fam = f;
        m->cap = cap;
    }
    struct family *f = &m->fam[m->n++];
    *f = (struct family){.name = name, .help = help ? help : "", .type = type};
    return f;
}

static void add_series(struct family *f, const char *suffix, const char *labels, const char *extra,
                       double value)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct sample *v = realloc(f->v, cap * sizeof *v);
        if (!v)
            return;
        f->v = v;
        f->cap = cap;
    }
    int has = labels && *labels, more = extra && *extra;
    char *series = NULL;
    if (asprintf(&series, "%s%s%s%s%s%s%s", f->name, suffix, has || more ? "{" : "",
                 has ? labels : "", has && more ? "," : "", more ? extra : "",
                 has || more ? "}" : "") < 0)
        return;
    f->v[f->n++] = (struct sample){series, value};
}

void zf_metrics_add(struct zf_metrics *m, enum zf_metric_type type, const char *name,
                    const char *help, const char *labels, double value)
{
    struct family *f = family(m, type, name, help);
    if (f)
        add_series(f, "", labels, NULL, value);
}

void zf_metrics_histogram(struct zf_metrics *m, const char *name, const char *help,
                          const char *labels, const struct zf_histogram *h)
{
    struct family *f = family(m, ZF_METRIC_HISTOGRAM, name, help);
    if (!f)
        return;
    uint64_t cum = 0;
    char le[48];
    for (size_t i = 0; i <= ZF_HIST_NBOUNDS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < ZF_HIST_NBOUNDS)
            snprintf(le, sizeof le, "le=\"%g\"", zf_hist_bounds[i]);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        add_series(f, "_bucket", labels, le, (double)cum);
    }
    add_series(f, "_sum", labels, NULL,
               (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    add_series(f, "_count", labels, NULL, (double)cum);
}

char *zf_metrics_escape(char *dst, size_t cap, const char *value)
{
    size_t n = 0;
    for (const char *p = value ? value : ""; *p && n + 3 < cap; p++) {
        if (*p == '\\' || *p == '"') {
            dst[n++] = '\\';
            dst[n++] = *p;
        } else if (*p == '\n') {
            dst[n++] = '\\';
            dst[n++] = 'n';
        } else {
            dst[n++] = *p;
        }
    }
    if (cap)
        dst[n < cap ? n : cap - 1] = '\0';
    return dst;
}

void zf_metrics_connections(struct zf_metrics *m, const char *protocol, size_t open,
                            uint64_t accepted)
{
    char labels[96];
    snprintf(labels, sizeof labels, "protocol=\"%s\"", protocol);
    zf_metrics_gauge(m, "zfront_connections", "Connections open now, by protocol.", labels,
                     (double)open);
    if (accepted != UINT64_MAX)
        zf_metrics_counter(m, "zfront_connections_accepted_total",
                           "Connections accepted since start, by protocol.", labels, accepted);
}

int zf_metrics_register(zf_metrics_fn fn, void *arg)
{
    for (size_t i = 0; i < ncollectors; i++)
        if (collectors[i].fn == fn && collectors[i].arg == arg)
            return ZF_OK;
    if (ncollectors == ZF_METRICS_MAX) {
        zf_log(ZF_LOG_ERROR, NULL, "metrics: more than %d collectors: one is left out",
               ZF_METRICS_MAX);
        return ZF_ERROR;
    }
    collectors[ncollectors].fn = fn;
    collectors[ncollectors].arg = arg;
    ncollectors++;
    return ZF_OK;
}

void zf_metrics_clear(void)
{
    ncollectors = 0;
}

static void core_collect(struct zf_metrics *m);

struct zf_metrics *zf_metrics_collect(void)
{
    struct zf_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    core_collect(m);
    for (size_t i = 0; i < ncollectors; i++)
        collectors[i].fn(m, collectors[i].arg);
    return m;
}

void zf_metrics_free(struct zf_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        for (size_t j = 0; j < m->fam[i].n; j++)
            free(m->fam[i].v[j].series);
        free(m->fam[i].v);
    }
    free(m->fam);
    free(m);
}

static const char *type_name(enum zf_metric_type t)
{
    return t == ZF_METRIC_COUNTER ? "counter" : t == ZF_METRIC_GAUGE ? "gauge" : "histogram";
}

/* A finite number: integers (counters) exactly, fractions with 15
 * significant digits (no 0.0023289999999999999). */
static void put_number(struct evbuffer *out, double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        evbuffer_add_printf(out, "%.0f", v);
    else
        evbuffer_add_printf(out, "%.15g", v);
}

/* A sample value as the text format wants it: integers without a
 * fraction, NaN and infinities by name. */
static void put_value(struct evbuffer *out, double v)
{
    if (isnan(v))
        evbuffer_add_printf(out, "NaN");
    else if (isinf(v))
        evbuffer_add_printf(out, v > 0 ? "+Inf" : "-Inf");
    else
        put_number(out, v);
}

int zf_metrics_render_text(const struct zf_metrics *m, struct evbuffer *out)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct family *f = &m->fam[i];
        evbuffer_add_printf(out, "# HELP %s ", f->name);
        /* help text escapes: backslash and newline */
        for (const char *p = f->help; *p; p++) {
            if (*p == '\\')
                evbuffer_add(out, "\\\\", 2);
            else if (*p == '\n')
                evbuffer_add(out, "\\n", 2);
            else
                evbuffer_add(out, p, 1);
        }
        evbuffer_add_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type));
        for (size_t j = 0; j < f->n; j++) {
            evbuffer_add_printf(out, "%s ", f->v[j].series);
            put_value(out, f->v[j].value);
            if (evbuffer_add(out, "\n", 1) != 0)
                return ZF_ERROR;
        }
    }
    return ZF_OK;
}

void zf_metrics_json_string(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            evbuffer_add_printf(out, "\\u%04x", *p);
        else
            evbuffer_add(out, p, 1);
    }
    evbuffer_add(out, "\"", 1);
}

int zf_metrics_render_json(const struct zf_metrics *m, struct evbuffer *out)
{
    int first = 1;
    evbuffer_add(out, "{", 1);
    for (size_t i = 0; i < m->n; i++) {
        const struct family *f = &m->fam[i];
        for (size_t j = 0; j < f->n; j++) {
            const char *s = f->v[j].series;
            if (f->type == ZF_METRIC_HISTOGRAM && strstr(s, "_bucket"))
                continue;
            double v = f->v[j].value;
            if (!first)
                evbuffer_add(out, ",", 1);
            first = 0;
            zf_metrics_json_string(out, s);
            evbuffer_add(out, ":", 1);
            if (isfinite(v))
                put_number(out, v);
            else
                evbuffer_add_printf(out, "null");
        }
    }
    return evbuffer_add(out, "}", 1) == 0 ? ZF_OK : ZF_ERROR;
}

double zf_metrics_sum(const struct zf_metrics *m, const char *name)
{
    double sum = 0;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->fam[i].name, name) == 0)
            for (size_t j = 0; j < m->fam[i].n; j++)
                sum += m->fam[i].v[j].value;
    return sum;
}

/* ------------------------------------------------------------ the core's samples */

#define MAX_CHANNELS 16
static const char *const classes[6] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};

/* Requests by channel; the last slot takes the channels beyond it. */
static struct channel_stats {
    const char *channel;
    uint64_t by_class[6];
    struct zf_histogram latency;
} channels[MAX_CHANNELS];
static size_t nchannels;

struct zf_histogram zf__metrics_queue_wait;

void zf_metrics_request(const char *channel, int status, uint64_t duration_us)
{
    if (!channel)
        channel = "http";
    struct channel_stats *c = NULL;
    for (size_t i = 0; i < nchannels && !c; i++)
        if (channels[i].channel == channel || strcmp(channels[i].channel, channel) == 0)
            c = &channels[i];
    if (!c && nchannels < MAX_CHANNELS - 1) {
        c = &channels[nchannels++];
        c->channel = channel;
    } else if (!c) {
        c = &channels[MAX_CHANNELS - 1];
        c->channel = "other";
        if (nchannels < MAX_CHANNELS)
            nchannels = MAX_CHANNELS;
    }
    int k = status >= 100 && status < 600 ? status / 100 - 1 : 5;
    c->by_class[k]++;
    zf_histogram_observe(&c->latency, duration_us);
}

static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static size_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    size_t n = 0;
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own descriptor */
}

static time_t started;

static void core_collect(struct zf_metrics *m)
{
    char labels[160];
    for (size_t i = 0; i < nchannels; i++) {
        struct channel_stats *c = &channels[i];
        for (int k = 0; k < 6; k++) {
            if (!c->by_class[k])
                continue;
            snprintf(labels, sizeof labels, "channel=\"%s\",code=\"%s\"", c->channel, classes[k]);
            zf_metrics_counter(m, "zfront_requests_total",
                               "Requests answered (access log lines), by zfront.channel and "
                               "status class (\"other\": no status, the client left first).",
                               labels, c->by_class[k]);
        }
    }
    for (size_t i = 0; i < nchannels; i++) {
        snprintf(labels, sizeof labels, "channel=\"%s\"", channels[i].channel);
        zf_metrics_histogram(m, "zfront_request_duration_seconds",
                             "Time from the complete request to the end of its response.", labels,
                             &channels[i].latency);
    }

    struct zf_pool_stats st;
    zf_pool_get_stats(&st);
    double workers = (double)(zf_cfg.threads > 0 ? zf_cfg.threads : 0);
    double busy = (double)st.running;
    zf_metrics_gauge(m, "zfront_workers", "Worker threads running the application.", NULL, workers);
    zf_metrics_gauge(m, "zfront_workers_busy", "Workers running a job now.", NULL, busy);
    zf_metrics_gauge(m, "zfront_workers_idle", "Workers waiting for a job.", NULL,
                     workers > busy ? workers - busy : 0);
    zf_metrics_gauge(m, "zfront_workers_stuck",
                     "Workers busy on one job for longer than server.stuck_after.", NULL,
                     (double)st.stuck);
    zf_metrics_counter(m, "zfront_workers_stuck_reported_total",
                       "Stuck workers the watchdog reported.", NULL, st.stuck_total);
    zf_metrics_gauge(m, "zfront_queue_depth", "Jobs waiting for a worker.", NULL,
                     (double)st.queued);
    zf_metrics_counter(m, "zfront_queue_refused_total",
                       "Requests answered 503 because server.max_queued requests waited.", NULL,
                       st.refused);
    zf_metrics_counter(m, "zfront_queue_expired_total",
                       "Requests answered 503 after waiting longer than server.queue_timeout.",
                       NULL, st.expired);
    zf_metrics_counter(m, "zfront_queue_cancelled_total",
                       "Requests answered 503 at shutdown without running.", NULL, st.cancelled);
    zf_metrics_histogram(m, "zfront_queue_wait_seconds",
                         "Time a request waited in the queue before a worker took it.", NULL,
                         &zf__metrics_queue_wait);

    zf_metrics_gauge(m, "zfront_connections_admitted",
                     "Client connections counted against server.max_connections.", NULL,
                     (double)zf_conn_open_count());
    zf_metrics_gauge(m, "zfront_connections_limit", "server.max_connections in force.", NULL,
                     (double)zf_conn_limit());
    zf_metrics_gauge(m, "zfront_buffered_bytes",
                     "Response bytes held in memory (queued and in transport buffers).", NULL,
                     (double)zf_exchange_buffered());
    zf_metrics_gauge(m, "zfront_spooled_bytes", "Response bytes in spool files.", NULL,
                     (double)zf_exchange_spooled());

    zf_hub_metrics(m);

    zf_metrics_gauge(m, "process_start_time_seconds",
                     "Start time of the process since the Unix epoch, in seconds.", NULL,
                     (double)started);
    zf_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL,
                     (double)resident_bytes());
    zf_metrics_gauge(m, "process_open_fds", "Open file descriptors.", NULL, (double)open_fds());
}

/* The process start (process_start_time_seconds), before main. */
__attribute__((constructor)) static void note_start(void)
{
    started = time(NULL);
}
