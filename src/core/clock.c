/* The clock: the successor of ZServer's <clock-server>. Each configured
 * clock sends an internal request (internal.h) through the worker pool
 * every period, on channel "clock", optionally with HTTP basic credentials.
 * A clock never overlaps itself: a tick that comes while its previous
 * request still runs is logged and skipped, never queued.
 *
 * Configuration: the list key clock.entries, one entry per clock, either
 * "PATH:PERIOD" (the --clock flag) or tab-separated key=value fields, which
 * is what a TOML [[clock]] table becomes (python/zfront/config.py):
 * path, period, method, user, password, host. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

struct clock {
    char *path;
    char *method;
    char *user;
    char *password;
    char *host;
    uint64_t period_ms;
    struct event *timer;
    int running;     /* its request is in flight */
    uint64_t ticks;  /* requests sent */
    uint64_t missed; /* ticks skipped because the previous one still ran */
    char label[80];
};

static struct zf_strlist clock_entries;
static struct clock *clocks;
static size_t nclocks;
static size_t running;

static const struct zf_cfg_key clock_keys[] = {
    {"clock.entries", ZF_CFG_LIST, &clock_entries, NULL, "--clock",
     "Periodic internal requests (ZServer's clock-server): `PATH:PERIOD` on the command line, "
     "or one TOML `[[clock]]` table each with path, period, method (GET), user, password, host; "
     "see docs/operations.md."},
    {NULL},
};

static void clock_free_all(void)
{
    for (size_t i = 0; i < nclocks; i++) {
        struct clock *c = &clocks[i];
        if (c->timer)
            event_free(c->timer);
        free(c->path);
        free(c->method);
        free(c->user);
        free(c->password);
        free(c->host);
    }
    free(clocks);
    clocks = NULL;
    nclocks = 0;
}

/* Sets one field of c from "name=value". Returns ZF_OK or ZF_ERROR. */
static int set_field(struct clock *c, const char *name, size_t nlen, const char *value)
{
#define IS(s) (nlen == strlen(s) && strncmp(name, s, nlen) == 0)
    char **slot = IS("path")       ? &c->path
                  : IS("method")   ? &c->method
                  : IS("user")     ? &c->user
                  : IS("password") ? &c->password
                  : IS("host")     ? &c->host
                                   : NULL;
    if (slot) {
        free(*slot);
        *slot = zf_xstrdup(value);
        return ZF_OK;
    }
    if (IS("period"))
        return zf_parse_msec(value, &c->period_ms);
#undef IS
    return ZF_ERROR;
}

/* True when text is the key=value form (a [[clock]] table), not PATH:PERIOD. */
static int is_table_form(const char *text)
{
    static const char *const names[] = {
        "path=", "period=", "method=", "user=", "password=", "host="};
    if (strchr(text, '\t'))
        return 1;
    for (size_t i = 0; i < ZF_ARRAY_LEN(names); i++)
        if (strncmp(text, names[i], strlen(names[i])) == 0)
            return 1;
    return 0;
}

/* Parses one entry into c. Returns ZF_OK or ZF_ERROR (logged). */
static int parse_entry(struct clock *c, const char *text)
{
    if (is_table_form(text)) {
        char *copy = zf_xstrdup(text), *save = NULL;
        for (char *f = strtok_r(copy, "\t", &save); f; f = strtok_r(NULL, "\t", &save)) {
            char *eq = strchr(f, '=');
            if (!eq || set_field(c, f, (size_t)(eq - f), eq + 1) != ZF_OK) {
                zf_log(ZF_LOG_ERROR, NULL,
                       "clock: bad field \"%s\" (expected path, period, method, user, password "
                       "or host = value)",
                       f);
                free(copy);
                return ZF_ERROR;
            }
        }
        free(copy);
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon || zf_parse_msec(colon + 1, &c->period_ms) != ZF_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "clock: \"%s\": expected PATH:PERIOD (e.g. /tick:60s)",
                   text);
            return ZF_ERROR;
        }
        c->path = strndup(text, (size_t)(colon - text));
    }
    if (!c->path || c->path[0] != '/') {
        zf_log(ZF_LOG_ERROR, NULL, "clock: \"%s\": the path must start with /", text);
        return ZF_ERROR;
    }
    if (c->period_ms < 10) {
        zf_log(ZF_LOG_ERROR, NULL, "clock %s: the period must be at least 10ms", c->path);
        return ZF_ERROR;
    }
    if (c->password && !c->user) {
        zf_log(ZF_LOG_ERROR, NULL, "clock %s: a password needs a user", c->path);
        return ZF_ERROR;
    }
    if (!c->method)
        c->method = zf_xstrdup("GET");
    for (const char *p = c->method; *p; p++) {
        if (*p < 'A' || *p > 'Z') {
            zf_log(ZF_LOG_ERROR, NULL, "clock %s: bad method \"%s\"", c->path, c->method);
            return ZF_ERROR;
        }
    }
    for (const char *p = c->path; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            zf_log(ZF_LOG_ERROR, NULL, "clock %s: the path may not hold spaces or control bytes",
                   c->path);
            return ZF_ERROR;
        }
    }
    snprintf(c->label, sizeof c->label, "clock %.60s", c->path);
    return ZF_OK;
}

static int clock_configure(struct zf_server *srv)
{
    clock_free_all();
    if (clock_entries.n == 0)
        return ZF_DECLINED;
    clocks = zf_xcalloc(clock_entries.n, sizeof *clocks);
    nclocks = clock_entries.n;
    for (size_t i = 0; i < nclocks; i++)
        if (parse_entry(&clocks[i], clock_entries.v[i]) != ZF_OK)
            return ZF_ERROR;
    /* a clock alone is nothing to serve: it runs beside a listener */
    return srv->nactive > 0 ? ZF_OK : ZF_DECLINED;
}

static void on_done(void *arg, int status, uint64_t bytes)
{
    (void)status;
    (void)bytes;
    struct clock *c = arg;
    c->running = 0;
    running--;
    zf_server_check_idle();
}

/* Adds "Authorization: Basic base64(user:password)". Returns ZF_OK/ZF_ERROR. */
static int add_basic_auth(struct zf_headers *h, const char *user, const char *password)
{
    char cred[512];
    /* user = "name:password" (the brief form) works as well as two fields */
    int n = password || strchr(user, ':') == NULL
                ? snprintf(cred, sizeof cred, "%s:%s", user, password ? password : "")
                : snprintf(cred, sizeof cred, "%s", user);
    if (n < 0 || (size_t)n >= sizeof cred)
        return ZF_ERROR;
    unsigned char b64[700] = "Basic ";
    int len = EVP_EncodeBlock(b64 + 6, (const unsigned char *)cred, n);
    return zf_headers_add(h, "Authorization", 13, (const char *)b64, (size_t)len + 6);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct clock *c = arg;
    if (zf_srv->state != ZF_RUNNING)
        return;
    if (c->running) {
        c->missed++;
        zf_log(ZF_LOG_WARN, NULL,
               "%s: the previous request still runs: tick skipped (%llu skipped so far)", c->label,
               (unsigned long long)c->missed);
        return;
    }
    struct zf_internal_req req = {
        .channel = "clock", .method = c->method, .target = c->path, .label = c->label};
    const char *host = c->host ? c->host : "localhost";
    int ok = zf_headers_add(&req.headers, "Host", 4, host, strlen(host)) == ZF_OK &&
             zf_headers_add(&req.headers, "User-Agent", 10, "zfront-clock", 12) == ZF_OK &&
             (!c->user || add_basic_auth(&req.headers, c->user, c->password) == ZF_OK);
    if (!ok || zf_internal_submit(&req, on_done, c) != ZF_OK) {
        zf_headers_free(&req.headers);
        zf_log(ZF_LOG_ERROR, NULL, "%s: cannot make the request", c->label);
        return;
    }
    c->running = 1;
    c->ticks++;
    running++;
}

static void clock_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    char path[128], labels[160];
    for (size_t i = 0; i < nclocks; i++) {
        snprintf(labels, sizeof labels, "path=\"%s\"",
                 zf_metrics_escape(path, sizeof path, clocks[i].path));
        zf_metrics_counter(m, "zfront_clock_ticks_total", "Clock requests sent, by path.", labels,
                           clocks[i].ticks);
        zf_metrics_counter(m, "zfront_clock_missed_total",
                           "Clock ticks skipped because the previous request still ran.", labels,
                           clocks[i].missed);
    }
}

static int clock_start(struct zf_server *srv)
{
    zf_metrics_register(clock_metrics, NULL);
    for (size_t i = 0; i < nclocks; i++) {
        struct clock *c = &clocks[i];
        c->timer = event_new(srv->base, -1, EV_PERSIST, on_tick, c);
        struct timeval tv = {(time_t)(c->period_ms / 1000),
                             (suseconds_t)((c->period_ms % 1000) * 1000)};
        if (!c->timer || event_add(c->timer, &tv) != 0)
            return ZF_ERROR;
        int ulen = c->user ? (int)strcspn(c->user, ":") : 0; /* never log a password */
        zf_log(ZF_LOG_INFO, NULL, "%s: %s every %.3g s%s%.*s", c->label, c->method,
               (double)c->period_ms / 1000.0, c->user ? " as " : "", ulen, c->user ? c->user : "");
    }
    return ZF_OK;
}

static void clock_stop(struct zf_server *srv, int graceful)
{
    (void)srv;
    (void)graceful;
    for (size_t i = 0; i < nclocks; i++) {
        if (clocks[i].timer)
            event_free(clocks[i].timer);
        clocks[i].timer = NULL;
    }
}

static size_t clock_active(struct zf_server *srv)
{
    (void)srv;
    return running;
}

static void clock_stats(struct zf_server *srv, struct evbuffer *out)
{
    (void)srv;
    for (size_t i = 0; i < nclocks; i++)
        evbuffer_add_printf(out, "%s: %llu sent, %llu skipped\n", clocks[i].label,
                            (unsigned long long)clocks[i].ticks,
                            (unsigned long long)clocks[i].missed);
}

const struct zf_module zf_clock_module = {
    .name = "clock",
    .keys = clock_keys,
    .configure = clock_configure,
    .start = clock_start,
    .stop = clock_stop,
    .active = clock_active,
    .stats = clock_stats,
};
