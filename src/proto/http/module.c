/* The HTTP module: its [http] settings, its listeners (endpoints) and the
 * lifecycle hooks the core calls. Connections themselves live in http1.c. */
#include <event2/buffer.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/metrics.h"
#include "http.h"

struct zf_http_config zf_http_cfg;
const struct zf_h2c_ops *zf_h2c; /* set by the h2 module when HTTP/2 is on (http.h) */

static const struct zf_cfg_key http_keys[] = {
    {"http.listen", ZF_CFG_LIST, &zf_http_cfg.listen, NULL, "--http",
     "Plain HTTP listen address (host:port, [v6]:port or port); repeat for several."},
    {"http.max_request_line", ZF_CFG_SIZE, &zf_http_cfg.max_request_line, "8k",
     "--max-request-line", "Longest request-target accepted; longer ones get 414."},
    {"http.max_header_size", ZF_CFG_SIZE, &zf_http_cfg.max_header_size, "64k", "--max-header-size",
     "Largest header section (field lines, and trailers) accepted; 431."},
    {"http.max_headers", ZF_CFG_INT, &zf_http_cfg.max_headers, "100", "--max-headers",
     "Most header fields in one request; more get 431."},
    {"http.max_body_size", ZF_CFG_SIZE, &zf_http_cfg.max_body_size, "1g", "--max-body-size",
     "Largest request body (declared or received); larger ones get 413. 0 is unlimited."},
    {"http.header_timeout", ZF_CFG_MSEC, &zf_http_cfg.header_timeout_ms, "30s", "--header-timeout",
     "Time for a whole request header section to arrive; then 408."},
    {"http.body_timeout", ZF_CFG_MSEC, &zf_http_cfg.body_timeout_ms, "60s", "--body-timeout",
     "Longest pause between two pieces of a request body; then 408."},
    {"http.keepalive_timeout", ZF_CFG_MSEC, &zf_http_cfg.keepalive_timeout_ms, "20s",
     "--keepalive-timeout", "Idle time before a keep-alive connection is closed (silently)."},
    {"http.send_timeout", ZF_CFG_MSEC, &zf_http_cfg.send_timeout_ms, "60s", "--send-timeout",
     "Longest time a client may take no response bytes; then the connection is closed."},
    {"http.max_keepalive_requests", ZF_CFG_INT, &zf_http_cfg.max_keepalive_requests, "1000",
     "--max-keepalive-requests",
     "Requests served on one connection before it is closed; "
     "0 is unlimited."},
    {NULL},
};

static struct zf_http_endpoint *endpoints;
static const struct zf_service http_service;
extern const struct zf_module zf_http_module;

/* Checks the settings and sets http-parser's process-wide header limit just
 * above ours, so that our own checks (414/431 with a precise message) fire
 * first. Returns ZF_OK, ZF_DECLINED without a listen address, or ZF_ERROR. */
static int http_configure(struct zf_server *srv)
{
    (void)srv;
    struct zf_http_config *c = &zf_http_cfg;
    if (c->max_request_line < 64 || c->max_request_line > (1u << 24)) {
        zf_log(ZF_LOG_ERROR, NULL, "http.max_request_line must be between 64 and 16m");
        return ZF_ERROR;
    }
    if (c->max_header_size < 256 || c->max_header_size > (1u << 26)) {
        zf_log(ZF_LOG_ERROR, NULL, "http.max_header_size must be between 256 and 64m");
        return ZF_ERROR;
    }
    if (c->max_headers < 1) {
        zf_log(ZF_LOG_ERROR, NULL, "http.max_headers must be at least 1");
        return ZF_ERROR;
    }
    if (c->header_timeout_ms == 0 || c->body_timeout_ms == 0 || c->keepalive_timeout_ms == 0 ||
        c->send_timeout_ms == 0) {
        zf_log(ZF_LOG_ERROR, NULL, "http timeouts must be greater than 0");
        return ZF_ERROR;
    }
    if (c->max_keepalive_requests < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "http.max_keepalive_requests must not be negative");
        return ZF_ERROR;
    }
    http_parser_set_max_header_size((uint32_t)(c->max_request_line + c->max_header_size + 4096));
    zf_service_register(&http_service);
    if (c->listen.n == 0)
        return ZF_DECLINED;
    return ZF_OK;
}

/* Opens one endpoint on addr and pushes it on *list. Its listener logs
 * under the channel's name when that is not plain "http", so the source
 * port's "webdav-source: listening on ..." line is told apart. */
static int listen_one(struct zf_server *srv, const char *addr, const char *scheme, int tls,
                      const char *channel, zf_accept_cb cb, struct zf_http_endpoint **list)
{
    struct zf_http_endpoint *ep = zf_xcalloc(1, sizeof *ep);
    ep->scheme = scheme;
    ep->channel = channel;
    ep->tls = tls;
    ep->listener =
        zf_listen(srv, addr, strcmp(channel, "http") == 0 ? scheme : channel, cb, ep);
    if (!ep->listener) {
        free(ep);
        return ZF_ERROR;
    }
    ep->listener->admit = 1; /* server.max_connections */
    ep->next = *list;
    *list = ep;
    return ZF_OK;
}

/* Shared by the plain (here) and https (h2/module.c) listeners: see http.h. */
int zf__http_listen_all(struct zf_server *srv, const struct zf_strlist *addrs,
                        const char *scheme, int tls, const char *channel, zf_accept_cb cb,
                        struct zf_http_endpoint **list)
{
    for (size_t i = 0; i < addrs->n; i++)
        if (listen_one(srv, addrs->v[i], scheme, tls, channel, cb, list) != ZF_OK)
            return ZF_ERROR;
    return ZF_OK;
}

/* The "http" service (server.h): a plain HTTP listener (HTTP/1.1 and h2c)
 * for another module's channel. Its endpoint joins this module's list, so
 * http_stop closes it with the others. */
static int http_service_listen(struct zf_server *srv, const char *addr, const char *channel,
                               int *port)
{
    if (listen_one(srv, addr, "http", 0, channel, zf_http_accept, &endpoints) != ZF_OK)
        return ZF_ERROR;
    *port = endpoints->listener->port;
    return ZF_OK;
}

static const struct zf_service http_service = {
    .name = "http",
    .module = &zf_http_module,
    .listen = http_service_listen,
};

/* Opens one listener per http.listen address. Returns ZF_OK or ZF_ERROR
 * (listeners opened so far are closed by stop()). */
static void http_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    zf__http1_metrics(m);
}

static int http_start(struct zf_server *srv)
{
    zf_metrics_register(http_metrics, NULL);
    return zf__http_listen_all(srv, &zf_http_cfg.listen, "http", 0, "http", zf_http_accept,
                               &endpoints);
}

/* Closes the listeners first (no new connection), then the connections:
 * idle ones at once, busy ones after their current response when graceful.
 * The connections copy what they need of their endpoint, so the endpoints
 * go now. */
static void http_stop(struct zf_server *srv, int graceful)
{
    (void)srv;
    for (struct zf_http_endpoint *ep = endpoints; ep; ep = ep->next) {
        zf_listener_free(ep->listener);
        ep->listener = NULL;
    }
    zf__http1_stop(graceful);
    while (endpoints) {
        struct zf_http_endpoint *next = endpoints->next;
        free(endpoints);
        endpoints = next;
    }
}

static size_t http_active(struct zf_server *srv)
{
    (void)srv;
    return zf__http1_active();
}

static void http_stats(struct zf_server *srv, struct evbuffer *out)
{
    (void)srv;
    size_t n = 0;
    for (struct zf_http_endpoint *ep = endpoints; ep; ep = ep->next)
        n += ep->listener != NULL;
    evbuffer_add_printf(out, "http.listeners: %zu\n", n);
    zf__http1_stats(out);
}

static size_t http_shed(struct zf_server *srv, size_t n)
{
    (void)srv;
    return zf__http1_shed(n);
}

const struct zf_module zf_http_module = {
    .name = "http",
    .keys = http_keys,
    .configure = http_configure,
    .start = http_start,
    .stop = http_stop,
    .active = http_active,
    .stats = http_stats,
    .shed = http_shed,
};
