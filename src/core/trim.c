/* Memory after a spike: glibc keeps freed heap memory for reuse, so after a
 * load spike (a thousand slow clients each holding a megabyte of queued
 * response) the process stays at its peak size. A loop timer notices when
 * the resident size grew by memory.trim_growth since the last trim and the
 * server has then been idle (no exchange alive: no request running, no
 * response queued) for memory.trim_idle, and calls malloc_trim(0), which
 * gives the free memory of every arena back to the system. Loop thread
 * only; it never touches Python. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include "config.h"
#include "exchange.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

static struct {
    uint64_t idle_ms;
    uint64_t growth;
} trim_cfg;

static const struct zf_cfg_key trim_keys[] = {
    {"memory.trim_idle", ZF_CFG_MSEC, &trim_cfg.idle_ms, "5s", NULL,
     "After a busy period (see trim_growth), return free heap memory to the system "
     "(malloc_trim) once no request has run and no response been queued for this long "
     "(0: never)."},
    {"memory.trim_growth", ZF_CFG_SIZE, &trim_cfg.growth, "32m", NULL,
     "Resident size growth since the last trim (or the start) that makes a busy period."},
    {NULL},
};

static struct event *timer;
static uint64_t base_rss; /* after the last trim, or at start */
static uint64_t idle_since_ms;
static uint64_t trims;

/* The resident set size in bytes (0 when /proc is not there). */
static uint64_t rss_bytes(void)
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

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    uint64_t now = zf_now_ms();
    if (zf_exchange_count() > 0) {
        idle_since_ms = 0;
        return;
    }
    if (!idle_since_ms)
        idle_since_ms = now;
    if (now - idle_since_ms < trim_cfg.idle_ms)
        return;
    uint64_t rss = rss_bytes();
    if (rss <= base_rss + trim_cfg.growth) {
        if (rss < base_rss)
            base_rss = rss; /* freed on its own: measure growth from here */
        return;
    }
    malloc_trim(0);
    uint64_t after = rss_bytes();
    trims++;
    zf_log(ZF_LOG_INFO, NULL,
           "memory: idle for %.1f s after a busy period: returned %.1f MiB to the system "
           "(resident %.1f -> %.1f MiB)",
           (double)(now - idle_since_ms) / 1000.0,
           (double)(rss - (after < rss ? after : rss)) / 1048576.0, (double)rss / 1048576.0,
           (double)after / 1048576.0);
    base_rss = after;
}

static int trim_configure(struct zf_server *srv)
{
    if (trim_cfg.idle_ms == 0)
        return ZF_DECLINED;
    return srv->nactive > 0 ? ZF_OK : ZF_DECLINED;
}

static void trim_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    zf_metrics_counter(m, "zfront_memory_trims_total",
                       "malloc_trim calls after the server went idle (memory.*).", NULL, trims);
}

static int trim_start(struct zf_server *srv)
{
    zf_metrics_register(trim_metrics, NULL);
    /* checked 4 times per idle period, at most once a second */
    uint64_t period = trim_cfg.idle_ms / 4;
    if (period > 1000)
        period = 1000;
    if (period < 50)
        period = 50;
    struct timeval tv = {(time_t)(period / 1000), (suseconds_t)((period % 1000) * 1000)};
    timer = event_new(srv->base, -1, EV_PERSIST, on_timer, NULL);
    if (!timer || event_add(timer, &tv) != 0)
        return ZF_ERROR;
    base_rss = rss_bytes();
    return ZF_OK;
}

static void trim_stop(struct zf_server *srv, int graceful)
{
    (void)srv;
    (void)graceful;
    if (timer)
        event_free(timer);
    timer = NULL;
}

static void trim_stats(struct zf_server *srv, struct evbuffer *out)
{
    (void)srv;
    evbuffer_add_printf(out, "memory: %llu trim(s), resident %.1f MiB\n", (unsigned long long)trims,
                        (double)rss_bytes() / 1048576.0);
}

const struct zf_module zf_trim_module = {
    .name = "memory",
    .keys = trim_keys,
    .configure = trim_configure,
    .start = trim_start,
    .stop = trim_stop,
    .stats = trim_stats,
};
