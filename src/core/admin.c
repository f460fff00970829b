/* The admin listener ([admin] listen, --admin): Prometheus metrics and the
 * live status page, served by libevent's evhttp on the loop thread. No
 * request here reaches a worker or Python, so it answers while every worker
 * is stuck.
 *
 *   GET /metrics        text exposition format 0.0.4 (metrics.h collection)
 *   GET / or /status    the status page (python/zfront/static/status.html)
 *   GET /status.json    the status now, one JSON object
 *   GET /status/events  the status as server-sent events: one at once, then
 *                       every event the hub delivers on topic zfront/status
 *
 * While a status stream is open, a timer publishes the status on the hub
 * topic zfront/status (audience "zfront:admin", so WebSocket clients see it
 * only when the app grants them that token) every admin.status_interval; the
 * streams are ordinary hub subscribers of that topic. Server-sent events
 * rather than a WebSocket: the page only listens, EventSource reconnects by
 * itself, and evhttp (libevent 2.1) sends it as a plain chunked response
 * with no protocol code of ours; it works with the ws module off and never
 * waits for the application's handshake authorisation (a worker). */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"
#include "hub.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "python.h"
#include "server.h"

#define STATUS_TOPIC "zfront/status"
/* a status stream whose client left this much unread is cut (slow reader) */
#define STREAM_MAX_UNSENT (256 * 1024)

static struct {
    char *listen;
    int allow_remote;
    uint64_t status_interval_ms;
    long max_streams;
    uint64_t timeout_ms;
} cfg;

static const struct zf_cfg_key admin_keys[] = {
    {"admin.listen", ZF_CFG_STR, &cfg.listen, NULL, "--admin",
     "Address of the admin listener (GET /metrics: Prometheus text format; GET /status: the "
     "live status page), served on the loop thread, never by a worker. Loopback addresses "
     "only unless admin.allow_remote. Empty: off."},
    {"admin.allow_remote", ZF_CFG_BOOL, &cfg.allow_remote, "false", NULL,
     "Allow admin.listen on a non-loopback address. The admin listener has no authentication "
     "and shows every request in flight: put it behind a firewall or a proxy that checks."},
    {"admin.status_interval", ZF_CFG_MSEC, &cfg.status_interval_ms, "1s", NULL,
     "How often the status is published on the hub topic zfront/status (and so pushed to open "
     "status pages), while at least one is open."},
    {"admin.max_streams", ZF_CFG_INT, &cfg.max_streams, "16", NULL,
     "Status pages (event streams) open at once; more are answered 503."},
    {"admin.timeout", ZF_CFG_MSEC, &cfg.timeout_ms, "30s", NULL,
     "Idle and write timeout of admin connections (a status stream that cannot be written for "
     "that long is closed)."},
    {NULL},
};

/* An open status stream: a hub subscriber writing server-sent events. */
struct stream {
    struct zf_hub_subscriber sub; /* first: the hub hands it back */
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct stream *prev, *next;
};

static char *const stream_tokens[] = {"zfront:admin", NULL};
static const char *const status_audience[] = {"zfront:admin", NULL};

static struct {
    struct evhttp *http;
    struct event *timer;
    char *page;
    size_t page_len;
    struct stream *streams;
    size_t nstreams;
    struct stream *graveyard; /* closed during a delivery: freed by the next tick */
    uint64_t served, streams_total, streams_cut;
} adm;

/* ------------------------------------------------------------ answers */

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

/* A short text/plain answer (evhttp_send_error would drop our headers). */
static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    if (b)
        evbuffer_add_printf(b, "%s\n", text);
    reply(req, code, reason, "text/plain; charset=utf-8", b);
    if (b)
        evbuffer_free(b);
}

/* ------------------------------------------------------------ status JSON */

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Appends the status object: time, pid, each worker (what it runs) and
 * every counter and gauge of a metrics collection. Returns ZF_OK or
 * ZF_ERROR (out of memory). */
static int status_json(struct evbuffer *out)
{
    struct zf_metrics *m = zf_metrics_collect();
    if (!m)
        return ZF_ERROR;
    size_t max = zf_cfg.threads > 0 ? (size_t)zf_cfg.threads : 1;
    struct zf_worker_info *w = calloc(max, sizeof *w);
    size_t n = w ? zf_pool_workers(w, max) : 0;
    evbuffer_add_printf(out, "{\"time\":%.3f,\"pid\":%ld,\"version\":", now_s(), (long)getpid());
    zf_metrics_json_string(out, ZF_VERSION);
    evbuffer_add_printf(out, ",\"stuck_after_ms\":%llu,\"workers\":[",
                        (unsigned long long)zf_pool_cfg.stuck_after_ms);
    for (size_t i = 0; i < n; i++) {
        int stuck = zf_pool_cfg.stuck_after_ms && w[i].busy_ms >= zf_pool_cfg.stuck_after_ms;
        evbuffer_add_printf(
            out, "%s{\"index\":%d,\"busy_ms\":%llu,\"stuck\":%s,\"doing\":", i ? "," : "",
            w[i].index, (unsigned long long)w[i].busy_ms, stuck ? "true" : "false");
        zf_metrics_json_string(out, w[i].busy_ms ? w[i].doing : "");
        evbuffer_add(out, "}", 1);
    }
    free(w);
    evbuffer_add_printf(out, "],\"samples\":");
    int rc = zf_metrics_render_json(m, out);
    zf_metrics_free(m);
    if (rc == ZF_OK && evbuffer_add(out, "}", 1) != 0)
        rc = ZF_ERROR;
    return rc;
}

/* ------------------------------------------------------------ streams */

static void stream_unlink(struct stream *s)
{
    zf_hub_unsubscribe_all(&s->sub);
    if (s->prev)
        s->prev->next = s->next;
    else
        adm.streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    adm.nstreams--;
    s->next = adm.graveyard;
    adm.graveyard = s;
}

static void free_graveyard(void)
{
    while (adm.graveyard) {
        struct stream *s = adm.graveyard;
        adm.graveyard = s->next;
        free(s);
    }
}

/* Ends a stream from our side (slow reader, shutdown): the chunked response
 * is finished, the connection left to evhttp. */
static void stream_end(struct stream *s)
{
    evhttp_connection_set_closecb(s->evcon, NULL, NULL);
    evhttp_send_reply_end(s->req);
    stream_unlink(s);
}

/* evhttp: the stream's connection is going away (client left, timeout).
 * When the client left mid-response evhttp detached the request from the
 * connection and left it to us: evhttp_send_reply_end then frees it. */
static void on_stream_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct stream *s = arg;
    if (!evhttp_request_get_connection(s->req))
        evhttp_send_reply_end(s->req);
    stream_unlink(s);
}

static void stream_send(struct stream *s, const char *data, size_t len)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > STREAM_MAX_UNSENT) {
        zf_log(ZF_LOG_WARN, NULL, "admin: a status page does not read its events: closed");
        adm.streams_cut++;
        stream_end(s);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    evbuffer_add(b, "data: ", 6);
    evbuffer_add(b, data, len);
    evbuffer_add(b, "\n\n", 2);
    evhttp_send_reply_chunk(s->req, b);
    evbuffer_free(b);
}

static void stream_deliver(struct zf_hub_subscriber *sub, struct zf_hub_event *ev)
{
    stream_send((struct stream *)sub, ev->data, ev->len);
}

static void open_stream(struct evhttp_request *req)
{
    if ((long)adm.nstreams >= cfg.max_streams) {
        zf_log(ZF_LOG_WARN, NULL, "admin: %zu status streams open (admin.max_streams): refused",
               adm.nstreams);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
        reply_text(req, 503, "Service Unavailable", "too many status streams (admin.max_streams)");
        return;
    }
    struct stream *s = calloc(1, sizeof *s);
    struct evbuffer *first = evbuffer_new();
    if (!s || !first || status_json(first) != ZF_OK) {
        free(s);
        if (first)
            evbuffer_free(first);
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    zf_hub_subscriber_init(&s->sub, stream_deliver, NULL);
    s->sub.tokens = stream_tokens;
    if (zf_hub_subscribe(&s->sub, STATUS_TOPIC, NULL) != ZF_OK) {
        free(s);
        evbuffer_free(first);
        evhttp_send_error(req, 500, "Cannot subscribe");
        return;
    }
    s->req = req;
    s->evcon = evhttp_request_get_connection(req);
    s->next = adm.streams;
    if (adm.streams)
        adm.streams->prev = s;
    adm.streams = s;
    adm.nstreams++;
    adm.streams_total++;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_connection_set_closecb(s->evcon, on_stream_closed, s);
    evhttp_send_reply_start(req, 200, "OK");
    /* a page only reads: no read timeout (evhttp's admin.timeout would cut
     * every stream after that long), the write timeout stays */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    struct timeval wt = {(time_t)(cfg.timeout_ms / 1000),
                         (suseconds_t)(cfg.timeout_ms % 1000) * 1000};
    if (bev)
        bufferevent_set_timeouts(bev, NULL, &wt);
    size_t len = evbuffer_get_length(first);
    char *text = (char *)evbuffer_pullup(first, -1);
    if (text)
        stream_send(s, text, len);
    evbuffer_free(first);
}

/* Timer: publishes the status on the hub while a stream listens. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    free_graveyard();
    if (!adm.nstreams)
        return;
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    if (status_json(b) == ZF_OK) {
        size_t len = evbuffer_get_length(b);
        char *text = (char *)evbuffer_pullup(b, -1);
        if (text)
            zf_hub_publish_local(STATUS_TOPIC, text, len, status_audience, NULL);
    }
    evbuffer_free(b);
}

/* ------------------------------------------------------------ requests */

static void admin_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    zf_metrics_counter(m, "zfront_admin_requests_total", "Requests to the admin listener.", NULL,
                       adm.served);
    zf_metrics_gauge(m, "zfront_admin_status_streams", "Status pages (event streams) open.", NULL,
                     (double)adm.nstreams);
    zf_metrics_counter(m, "zfront_admin_status_streams_cut_total",
                       "Status streams closed because the page did not read them.", NULL,
                       adm.streams_cut);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    adm.served++;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path)
        path = "/";
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "only GET and HEAD on the admin listener");
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct zf_metrics *m = zf_metrics_collect();
        if (!m || zf_metrics_render_text(m, body) != ZF_OK)
            evhttp_send_error(req, 500, "Out of memory");
        else
            reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
        zf_metrics_free(m);
    } else if (strcmp(path, "/status.json") == 0) {
        if (status_json(body) != ZF_OK)
            evhttp_send_error(req, 500, "Out of memory");
        else
            reply(req, 200, "OK", "application/json", body);
    } else if (strcmp(path, "/status/events") == 0) {
        open_stream(req);
    } else if (strcmp(path, "/") == 0 || strcmp(path, "/status") == 0) {
        if (!adm.page) {
            reply_text(req, 404, "Not Found",
                       "the status page (zfront/static/status.html) is missing");
        } else {
            evbuffer_add_reference(body, adm.page, adm.page_len, NULL, NULL);
            reply(req, 200, "OK", "text/html; charset=utf-8", body);
        }
    } else {
        evbuffer_add_printf(body, "not found: try /metrics or /status\n");
        reply(req, 404, "Not Found", "text/plain; charset=utf-8", body);
    }
    evbuffer_free(body);
}

/* ------------------------------------------------------------ module hooks */

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

static int admin_configure(struct zf_server *srv)
{
    (void)srv;
    if (!cfg.listen || !*cfg.listen)
        return ZF_DECLINED;
    struct sockaddr_storage ss;
    socklen_t len;
    if (zf_parse_addr(cfg.listen, &ss, &len) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "admin.listen: not an address: \"%s\"", cfg.listen);
        return ZF_ERROR;
    }
    if (!is_loopback(&ss) && !cfg.allow_remote) {
        zf_log(ZF_LOG_ERROR, NULL,
               "admin.listen: %s is not a loopback address: the admin listener has no "
               "authentication and shows every request in flight; set admin.allow_remote = true "
               "to serve it there anyway",
               cfg.listen);
        return ZF_ERROR;
    }
    if (cfg.status_interval_ms < 100 || cfg.max_streams < 1 || cfg.timeout_ms < 1000) {
        zf_log(ZF_LOG_ERROR, NULL,
               "admin: status_interval must be at least 100ms, max_streams at least 1, timeout "
               "at least 1s");
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* Reads the status page once at start (main thread, before the loop). */
static void load_page(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/zfront/static/status.html", zf__py_dir());
    FILE *f = fopen(path, "rb");
    if (!f) {
        zf_log(ZF_LOG_WARN, NULL, "admin: cannot read %s: no status page", path);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    char buf[16384];
    size_t n;
    while (b && (n = fread(buf, 1, sizeof buf, f)) > 0)
        evbuffer_add(b, buf, n);
    fclose(f);
    if (!b)
        return;
    adm.page_len = evbuffer_get_length(b);
    adm.page = malloc(adm.page_len + 1);
    if (adm.page)
        evbuffer_remove(b, adm.page, adm.page_len);
    evbuffer_free(b);
}

static int admin_start(struct zf_server *srv)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (zf_parse_addr(cfg.listen, &ss, &len) != ZF_OK)
        return ZF_ERROR;
    adm.http = evhttp_new(srv->base);
    if (!adm.http)
        return ZF_ERROR;
    struct evconnlistener *lev = evconnlistener_new_bind(
        srv->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        64, (struct sockaddr *)&ss, (int)len);
    if (!lev || !evhttp_bind_listener(adm.http, lev)) {
        zf_log(ZF_LOG_ERROR, NULL, "admin: cannot listen on %s: %s", cfg.listen,
               evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        if (lev)
            evconnlistener_free(lev);
        evhttp_free(adm.http);
        adm.http = NULL;
        return ZF_ERROR;
    }
    evhttp_set_allowed_methods(adm.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(adm.http, 16384);
    evhttp_set_max_body_size(adm.http, 65536);
    struct timeval tv = {(time_t)(cfg.timeout_ms / 1000),
                         (suseconds_t)(cfg.timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(adm.http, &tv);
    evhttp_set_gencb(adm.http, on_request, NULL);

    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char host[64] = "?";
    int port = 0;
    if (getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&bound, &blen) == 0) {
        if (bound.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (void *)&bound;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
        } else {
            struct sockaddr_in *in = (void *)&bound;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        }
    }
    zf_log(ZF_LOG_INFO, NULL,
           bound.ss_family == AF_INET6 ? "admin: listening on [%s]:%d"
                                       : "admin: listening on %s:%d",
           host, port);

    struct timeval iv = {(time_t)(cfg.status_interval_ms / 1000),
                         (suseconds_t)(cfg.status_interval_ms % 1000) * 1000};
    adm.timer = event_new(srv->base, -1, EV_PERSIST, on_tick, NULL);
    if (!adm.timer || event_add(adm.timer, &iv) != 0)
        return ZF_ERROR;
    load_page();
    zf_metrics_register(admin_metrics, NULL);
    return ZF_OK;
}

/* Stops at once, graceful or not: the admin listener holds no request of
 * any client, and the streams must be gone before the hub is freed. */
static void admin_stop(struct zf_server *srv, int graceful)
{
    (void)srv;
    (void)graceful;
    while (adm.streams)
        stream_end(adm.streams);
    if (adm.timer) {
        event_free(adm.timer);
        adm.timer = NULL;
    }
    if (adm.http) {
        evhttp_free(adm.http);
        adm.http = NULL;
    }
    free_graveyard();
    free(adm.page);
    adm.page = NULL;
}

const struct zf_module zf_admin_module = {
    .name = "admin",
    .keys = admin_keys,
    .configure = admin_configure,
    .start = admin_start,
    .stop = admin_stop,
};
